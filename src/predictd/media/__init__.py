"""Media: the images models take and the images they give.

Inputs (``inputs``, ``data_uris``, ``decoding``, ``limits``): URLs fetched through
:mod:`predictd.outbound`, data URIs, decoding under a pixel cap; run in workers. Outputs (``outputs``):
files behind unguessable, expiring names, written by workers and served by the API process.

Importing this package loads neither Pillow nor httpx: the API process imports it for data-URI sizes and
output files, and each heavy part is imported where it is first needed.
"""

from .data_uris import data_uri_size, decode_data_uri
from .inputs import fetch_image_bytes, load_image
from .limits import MediaLimits
from .outputs import LocalOutputs

__all__ = [
    "LocalOutputs",
    "MediaLimits",
    "data_uri_size",
    "decode_data_uri",
    "fetch_image_bytes",
    "load_image",
]
