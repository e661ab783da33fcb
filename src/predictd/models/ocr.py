"""``ocr``: RapidOCR (PP-OCR detection, direction and recognition networks) on ONNX Runtime, CPU.

The three ONNX networks ship inside the ``rapidocr`` wheel; their paths are given explicitly so that the
library never looks for (or downloads) anything else. rapidocr, OpenCV and ONNX Runtime are imported in
``setup()``, i.e. only in worker processes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from ..runtime.predictor import BasePredictor
from ..runtime.types import ImageInput

# The files inside the rapidocr wheel (its defaults for onnxruntime: PP-OCRv6 small det / rec, v2 cls).
DET_MODEL = "PP-OCRv6_det_small.onnx"
REC_MODEL = "PP-OCRv6_rec_small.onnx"
CLS_MODEL = "ch_ppocr_mobile_v2.0_cls_mobile.onnx"
THREADS = 1  # the server runs several single-request workers on few cores


class OcrLine(BaseModel):
    text: str
    score: float = Field(description="Recognition confidence in [0, 1].")
    box: list[list[float]] = Field(
        description="The line's quadrilateral in pixels: [x, y] of its top-left, top-right, bottom-right "
        "and bottom-left corners."
    )


class OcrResult(BaseModel):
    text: str = Field(description="All lines, top to bottom, joined by newlines.")
    lines: list[OcrLine]


class Ocr(BasePredictor):
    """Reads printed text (Latin and Chinese scripts) in a photo or a scan: each line with its box."""

    _engine: Any = None

    def setup(self) -> None:
        import rapidocr

        models = Path(rapidocr.__file__).parent / "models"
        self._engine = rapidocr.RapidOCR(
            params={
                "Global.log_level": "warning",
                "Det.model_path": str(models / DET_MODEL),
                "Rec.model_path": str(models / REC_MODEL),
                "Cls.model_path": str(models / CLS_MODEL),
                "EngineConfig.onnxruntime.intra_op_num_threads": THREADS,
                "EngineConfig.onnxruntime.inter_op_num_threads": THREADS,
            }
        )
        # ONNX Runtime finishes initialising on the first run: do it now, so setup_time covers the load.
        self._engine(np.full((64, 64, 3), 255, dtype=np.uint8))

    def predict(
        self,
        image: ImageInput,
        min_score: float = Field(default=0.5, ge=0.0, le=1.0, description="Drop lines scored below this."),
    ) -> OcrResult:
        # A PIL image (not an array, which rapidocr takes as BGR); never a string, which it would fetch.
        result = self._engine(image.convert("RGB"), text_score=min_score)
        texts = result.txts or ()
        scores = result.scores or ()
        boxes = result.boxes if result.boxes is not None else ()
        lines = [
            OcrLine(
                text=str(text),
                score=round(float(score), 5),
                box=[[round(float(x), 1), round(float(y), 1)] for x, y in np.asarray(box).tolist()],
            )
            for text, score, box in zip(texts, scores, boxes, strict=True)
            if float(score) >= min_score
        ]
        return OcrResult(text="\n".join(line.text for line in lines), lines=lines)
