"""PEFT adapter directories (adapter_config.json + adapter_model.safetensors) read and written
with NumPy alone, so the ServerApp needs nothing beyond flwr. Only float32 tensors, as mft
writes them."""

import json
import os
from pathlib import Path

import numpy as np

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file, in file order."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its header size)")
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    body = data[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}; only F32 is read")
        start, end = info["data_offsets"]
        tensors[name] = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"]).copy()
    return tensors


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """Writes float32 `tensors` as a safetensors file, atomically."""
    header: dict = {"__metadata__": {"format": "pt"}}
    chunks = []
    offset = 0
    for name, value in tensors.items():
        raw = np.ascontiguousarray(value, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    atomic_write(path, len(text).to_bytes(8, "little") + text + b"".join(chunks))


def atomic_write(path: Path, data: bytes) -> None:
    """Writes `data` to a temporary file, syncs it, and renames it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_adapter(directory: Path) -> tuple[dict[str, np.ndarray], str]:
    """The tensors and the config text of a PEFT adapter directory."""
    return read_safetensors(directory / WEIGHTS), (directory / CONFIG).read_text()


def write_adapter(directory: Path, tensors: dict[str, np.ndarray], config_text: str) -> None:
    """Writes a PEFT adapter directory: the weights first, then the config that announces them."""
    write_safetensors(directory / WEIGHTS, tensors)
    atomic_write(directory / CONFIG, config_text.encode())
