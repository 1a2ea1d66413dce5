"""Writes mft-fl/tests/fixtures/flower_objects.json: the object ids (and the bytes of the small
objects) that flwr's own code computes for a fixed message, so that mft-fl's encoder is checked
against Flower rather than against itself.

Run from the repository root with flwr==1.42.0 installed:
    python mft-fl/flower/object_fixtures.py
"""

import base64
import json
import pathlib

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.app.message.message import make_message
from flwr.app.metadata import Metadata
from flwr.supercore.inflatable.inflatable_object import (
    get_all_nested_objects,
    get_object_tree,
)

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "flower_objects.json"


def values(n: int, scale: float) -> np.ndarray:
    """Deterministic float32 values: (i % 97 - 48) * scale."""
    return ((np.arange(n) % 97 - 48) * scale).astype(np.float32)


def main() -> None:
    big = 5 * 1024 * 1024 // 4 + 1000  # a .npy just over one 5 MiB chunk
    arrays = ArrayRecord(
        {
            "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight": Array(
                values(4 * 16, 0.01).reshape(4, 16)
            ),
            "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight": Array(
                np.zeros((48, 4), dtype=np.float32)
            ),
            "base_model.model.transformer.h.1.attn.c_attn.lora_B.weight": Array(
                np.zeros((48, 4), dtype=np.float32)
            ),
            "big": Array(values(big, 0.5)),
            "zeros-two-chunks": Array(np.zeros(2 * 5 * 1024 * 1024 // 4, dtype=np.float32)),
            "scalar": Array(np.array(3.5, dtype=np.float32)),
        }
    )
    config = ConfigRecord(
        {"server-round": 2, "lr": 0.01, "proximal-mu": 0.1, "name": "héllo", "flag": True}
    )
    metrics = MetricRecord({"num-examples": 250, "train-loss": 1.25})
    content = RecordDict({"arrays": arrays, "config": config, "metrics": metrics})
    metadata = Metadata(
        run_id=7,
        message_id="",
        src_node_id=1,
        dst_node_id=42,
        reply_to_message_id="",
        group_id="2",
        created_at=1760000000.5,
        ttl=3600.0,
        message_type="train",
    )
    message = make_message(metadata=metadata, content=content)
    objects = get_all_nested_objects(message)

    def tree(t):
        return {"id": t.object_id, "children": [tree(c) for c in t.children]}

    small = {}
    for object_id, obj in objects.items():
        data = obj.deflate()
        if len(data) <= 4096:
            small[object_id] = base64.b64encode(data).decode("ascii")
    fixture = {
        "note": "written by mft-fl/flower/object_fixtures.py with flwr 1.42.0; do not edit",
        "big_len": big,
        "message_id": message.object_id,
        "tree": tree(get_object_tree(message)),
        "small_objects": small,
    }
    OUT.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {OUT} ({len(objects)} objects)")


if __name__ == "__main__":
    main()
