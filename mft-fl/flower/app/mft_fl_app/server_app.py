"""The ServerApp: flwr's own FedAvg or FedProx over the LoRA arrays of a PEFT adapter, named
by their PEFT keys, with mft-fl clients as the nodes. After each round it writes, under the
run config's `out-dir`:

- `round-NNNN/adapter_model.safetensors` + `adapter_config.json`: the aggregated (global)
  adapter, a PEFT directory `mft eval --adapter` and `PeftModel.from_pretrained` load;
- `round-NNNN/train.json`: the aggregated train metrics, and each reply's node id and
  `num-examples` (the FedAvg weight), and the failed replies with their reasons;
- `round-NNNN/evaluate.json`: the aggregated evaluation metrics (`eval-loss` weighted by
  each node's held-out examples) and the replies;
- `summary.json` once every round is done.
"""

import json
import time
from pathlib import Path

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedProx

from .adapter_io import atomic_write, read_adapter, write_adapter

app = ServerApp()


def _metrics(msg: Message) -> dict:
    """The reply's MetricRecord as a dict."""
    record = next(iter(msg.content.metric_records.values()))
    return {k: v for k, v in record.items()}


def _replies(replies: list[Message]) -> tuple[list[dict], list[dict]]:
    ok, failed = [], []
    for msg in replies:
        node = msg.metadata.src_node_id
        if msg.has_error():
            failed.append({"node_id": node, "code": msg.error.code, "reason": msg.error.reason})
        else:
            ok.append({"node_id": node, "metrics": _metrics(msg)})
    return ok, failed


def recording(base: type) -> type:
    """`base` (FedAvg or FedProx) writing each round's results to `out_dir`."""

    class Recording(base):  # type: ignore[misc, valid-type]
        def __init__(self, out_dir: Path, adapter_config: str, **kwargs) -> None:
            super().__init__(**kwargs)
            self.out_dir = out_dir
            self.adapter_config = adapter_config

        def _write(self, server_round: int, name: str, value: dict) -> None:
            path = self.out_dir / f"round-{server_round:04d}" / name
            atomic_write(path, (json.dumps(value, indent=1) + "\n").encode())

        def aggregate_train(self, server_round: int, replies):  # type: ignore[override]
            replies = list(replies)
            arrays, metrics = super().aggregate_train(server_round, replies)
            ok, failed = _replies(replies)
            if arrays is not None:
                tensors = {k: v.numpy() for k, v in arrays.items()}
                write_adapter(self.out_dir / f"round-{server_round:04d}", tensors, self.adapter_config)
            self._write(
                server_round,
                "train.json",
                {
                    "round": server_round,
                    "aggregated": arrays is not None,
                    "metrics": dict(metrics) if metrics is not None else None,
                    "replies": ok,
                    "failures": failed,
                },
            )
            return arrays, metrics

        def aggregate_evaluate(self, server_round: int, replies):  # type: ignore[override]
            replies = list(replies)
            metrics = super().aggregate_evaluate(server_round, replies)
            ok, failed = _replies(replies)
            self._write(
                server_round,
                "evaluate.json",
                {
                    "round": server_round,
                    "metrics": dict(metrics) if metrics is not None else None,
                    "replies": ok,
                    "failures": failed,
                },
            )
            return metrics

    return Recording


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Runs the configured strategy for `num-server-rounds` rounds."""
    cfg = context.run_config
    out_dir = Path(str(cfg["out-dir"]))
    if not out_dir.is_absolute():
        raise ValueError(f"out-dir {out_dir!s} must be an absolute path")
    initial, adapter_config = read_adapter(Path(str(cfg["initial-adapter"])))
    nodes = int(cfg["min-nodes"])
    kind = str(cfg["strategy"]).lower()
    kwargs = {
        "fraction_train": 1.0,
        "fraction_evaluate": 1.0,
        "min_train_nodes": nodes,
        "min_evaluate_nodes": nodes,
        "min_available_nodes": nodes,
    }
    if kind == "fedavg":
        base = FedAvg
    elif kind == "fedprox":
        base = FedProx
        kwargs["proximal_mu"] = float(cfg["proximal-mu"])
    else:
        raise ValueError(f"strategy {kind!r}: expected fedavg or fedprox")
    strategy = recording(base)(out_dir, adapter_config, **kwargs)
    started = time.time()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord({k: Array(v) for k, v in initial.items()}),
        num_rounds=int(cfg["num-server-rounds"]),
        timeout=float(cfg["round-timeout"]),
        train_config=ConfigRecord({"local-steps": int(cfg["local-steps"]), "lr": float(cfg["lr"])}),
        evaluate_config=ConfigRecord(),
    )
    summary = {
        "strategy": kind,
        "rounds": int(cfg["num-server-rounds"]),
        "seconds": time.time() - started,
        "train_metrics": {str(r): dict(m) for r, m in result.train_metrics_clientapp.items()},
        "evaluate_metrics": {str(r): dict(m) for r, m in result.evaluate_metrics_clientapp.items()},
    }
    atomic_write(out_dir / "summary.json", (json.dumps(summary, indent=1) + "\n").encode())
