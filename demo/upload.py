"""The photo upload box: Gradio's `gr.File`, minus a leftover file per upload, plus a clear message
for API calls that send something other than files.

Gradio 6.31's `File._process_single_file` (gradio/components/file.py) opens
`tempfile.NamedTemporaryFile(delete=False, dir=GRADIO_CACHE)` for every file it hands to the
handler as a path, renames the Python object (not the file) and drops it: each uploaded photo
left one empty `tmp*` file in Gradio's upload folder, for good (about 400 in 200 requests of
two photos). `photo_files()` hands over the same path without creating that file.
"""
from __future__ import annotations

import types
from typing import Any

import gradio as gr
from gradio.data_classes import FileData, ListFiles
from gradio.utils import NamedString
from gradio_client import utils as client_utils
from pydantic import ValidationError

API_HINT = ("the predict endpoint takes a list of image files, e.g. gradio_client's "
            "client.predict([handle_file('photo.jpg')], api_name='/predict')")


class _PhotoList(ListFiles):
    """`ListFiles` whose validation failure is a message for the caller, not a bare `{"error": null}`."""

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> "_PhotoList":
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError:
            got = (f"a list of {', '.join(sorted({type(x).__name__ for x in obj}))}" if isinstance(obj, list)
                   else f"a {type(obj).__name__}")
            raise gr.Error(f"Not a list of files (got {got}): {API_HINT}.", title="Bad input") from None


def photo_files(**kwargs: Any) -> gr.File:
    """`gr.File(file_count="multiple", type="filepath", **kwargs)` without the leftover file per upload,
    and with a clear message for API callers that send something else.

    The two changes are made on this one object rather than in a subclass: Gradio writes a
    `.pyi` stub next to the source of every component subclass when it is imported.
    """
    box = gr.File(file_count="multiple", type="filepath", **kwargs)
    box.data_model = _PhotoList
    box._process_single_file = types.MethodType(_path_without_temp_file, box)
    return box


def _path_without_temp_file(box: gr.File, f: FileData) -> NamedString:
    """`gr.File._process_single_file` for type="filepath", less its `NamedTemporaryFile(delete=False)`."""
    if box.file_types and not client_utils.is_valid_file(f.path, box.file_types):
        raise gr.Error(f"Invalid file type. Please upload a file that is one of these formats: {box.file_types}")
    return NamedString(f.path)
