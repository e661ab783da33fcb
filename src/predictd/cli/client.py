"""``predictd predict`` and ``predictd predictions list|get|cancel``: the SDK from the command line.

The server's address and key come from ``--base-url`` / ``--api-key`` or ``PREDICTD_BASE_URL`` /
``PREDICTD_API_KEY``. Results go to standard output (JSON, or the paths of saved images); progress and
errors go to standard error; a failure exits with status 1 after printing the error's name.
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn
from urllib.parse import urlsplit

import orjson
import typer
from rich.console import Console

if TYPE_CHECKING:
    from ..sdk import Client

predictions_app = typer.Typer(
    help="List, show and cancel predictions on a predictd server.", no_args_is_help=True
)

err = Console(stderr=True, highlight=False, soft_wrap=True)

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")

BaseUrl = Annotated[
    str, typer.Option("--base-url", envvar="PREDICTD_BASE_URL", help="The server's URL.", show_default=True)
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", envvar="PREDICTD_API_KEY", help="API key.", show_default=False)
]


# -- inputs ------------------------------------------------------------------------------------------------


def file_data_uri(path: Path) -> str:
    """A local file as a ``data:`` URI with its media type guessed from its name."""
    mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def parse_input(item: str) -> tuple[str, Any]:
    """``key=value``: the value as JSON when it parses, else as a string; ``key=@path`` is the file at
    ``path`` as a data URI (``key=@@text`` is the string ``@text``)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise typer.BadParameter(f"expected key=value, got {item!r}", param_hint="'-i' / '--input'")
    if raw.startswith("@@"):
        return key, raw[1:]
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        if not path.is_file():
            raise typer.BadParameter(f"{key}: no such file {str(path)!r}", param_hint="'-i' / '--input'")
        return key, file_data_uri(path)
    try:
        return key, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return key, raw


def parse_inputs(items: list[str]) -> dict[str, Any]:
    return dict(parse_input(item) for item in items)


# -- outputs -----------------------------------------------------------------------------------------------


def is_image_ref(value: str) -> bool:
    if value.startswith("data:image/"):
        return True
    if value.startswith(("http://", "https://")):
        return urlsplit(value).path.lower().endswith(IMAGE_SUFFIXES)
    return False


def _extension(mime: str) -> str:
    return {"image/jpeg": ".jpg", "image/png": ".png"}.get(mime) or mimetypes.guess_extension(mime) or ".bin"


class ImageSaver:
    """Writes the image outputs of one prediction to ``directory`` as ``<id>-<n>.<ext>``."""

    def __init__(self, client: Client, directory: Path, stem: str) -> None:
        self.client = client
        self.directory = directory
        self.stem = stem
        self.saved: list[Path] = []

    def fetch(self, ref: str) -> tuple[bytes, str] | None:
        if ref.startswith("data:"):
            header, _, payload = ref.partition(",")
            mime = header[len("data:") :].split(";")[0]
            try:
                return base64.b64decode(payload, validate=True), mime
            except (binascii.Error, ValueError):
                return None
        import httpx

        api_key = self.client.api_key
        same_server = ref.startswith(self.client.base_url + "/")
        headers = {"x-api-key": api_key} if same_server and api_key else {}
        try:
            response = httpx.get(ref, headers=headers, timeout=60, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            _fail(f"DownloadError: could not download output {ref}: {exc}")
        mime = response.headers.get("content-type", "").split(";")[0].strip()
        if not mime.startswith("image/"):
            return None
        return response.content, mime

    def save(self, value: Any) -> Any:
        """The output with each image replaced by the path it was saved to."""
        if isinstance(value, list):
            return [self.save(item) for item in value]
        if isinstance(value, dict):
            return {key: self.save(item) for key, item in value.items()}
        if isinstance(value, str) and is_image_ref(value):
            fetched = self.fetch(value)
            if fetched is None:
                return value
            data, mime = fetched
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{self.stem}-{len(self.saved)}{_extension(mime)}"
            path.write_bytes(data)
            self.saved.append(path)
            return str(path)
        return value


def _only_images(value: Any, saved: set[str]) -> bool:
    if isinstance(value, list):
        return all(_only_images(item, saved) for item in value)
    return isinstance(value, str) and value in saved


# -- plumbing ----------------------------------------------------------------------------------------------


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def _client(base_url: str, api_key: str | None) -> Iterator[Client]:
    from ..sdk import (
        APIConnectionError,
        APIError,
        Client,
        PredictionCancelled,
        PredictionFailed,
        PredictionTimeout,
    )

    try:
        with Client(api_key, base_url=base_url) as client:
            yield client
    except PredictionFailed as exc:
        _fail(f"{exc.error_name or exc.error_id or 'PredictionFailed'}: {exc.message} (prediction {exc.id})")
    except PredictionCancelled as exc:
        _fail(f"Cancelled: prediction {exc.id} was cancelled")
    except PredictionTimeout as exc:
        _fail(f"Timeout: {exc}")
    except APIError as exc:
        request = f" (request {exc.request_id})" if exc.request_id else ""
        _fail(f"{exc.error_id}: {exc.message}{request}")
    except APIConnectionError as exc:
        _fail(f"ConnectionError: cannot reach {base_url}: {exc}")
    except ValueError as exc:  # e.g. a base URL that is not http(s)
        _fail(f"error: {exc}", 2)


def _print_json(value: Any) -> None:
    typer.echo(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode())


# -- commands ----------------------------------------------------------------------------------------------


def predict(
    model: Annotated[str, typer.Argument(help="The model's slug.")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="key=value (JSON if it parses, else a string); key=@path sends a local file as a data URI.",
        ),
    ] = None,
    output_dir: Annotated[
        Path, typer.Option("--output-dir", "-o", help="Where image outputs are written.")
    ] = Path("."),
    timeout: Annotated[
        float | None, typer.Option(help="Give up waiting after this many seconds.", show_default=False)
    ] = None,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Run a prediction and print its output; image outputs are saved to files whose paths are printed."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    payload = parse_inputs(inputs or [])
    with _client(base_url, api_key) as client:
        progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=err,
            transient=True,
        )
        with progress:
            task = progress.add_task(f"{model}: running", total=None)

            def on_update(prediction: dict[str, Any]) -> None:
                progress.update(
                    task, description=f"{model} {prediction.get('id')}: {prediction.get('status')}"
                )

            prediction = client.run(model, payload, timeout=timeout, on_update=on_update)
        saver = ImageSaver(client, output_dir, str(prediction.get("id") or "output"))
        output = saver.save(prediction.get("output"))
        saved = {str(path) for path in saver.saved}
        if saved and _only_images(output, saved):
            for path in saver.saved:
                typer.echo(str(path))
        else:
            _print_json(output)


@predictions_app.command("list")
def predictions_list(
    model: Annotated[str | None, typer.Option(help="Only this model's predictions.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many (newest first); 0 for all.")] = 20,
    per_page: Annotated[int, typer.Option(help="Page size of each request (1..50).")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """List predictions, newest first: id, status, model, created_at (tab-separated)."""
    with _client(base_url, api_key) as client:
        for count, prediction in enumerate(client.predictions.list(per_page=per_page, model=model), 1):
            if as_json:
                typer.echo(orjson.dumps(prediction).decode())
            else:
                fields = ("id", "status", "model", "created_at")
                typer.echo("\t".join(str(prediction.get(name) or "") for name in fields))
            if limit and count >= limit:
                break


def _show(action: Callable[[Client], dict[str, Any]], base_url: str, api_key: str | None) -> None:
    with _client(base_url, api_key) as client:
        _print_json(action(client))


@predictions_app.command("get")
def predictions_get(
    prediction_id: Annotated[str, typer.Argument(help="The prediction's id.")],
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Print a prediction as JSON."""
    _show(lambda client: client.predictions.get(prediction_id), base_url, api_key)


@predictions_app.command("cancel")
def predictions_cancel(
    prediction_id: Annotated[str, typer.Argument(help="The prediction's id.")],
    base_url: BaseUrl = DEFAULT_BASE_URL,
    api_key: ApiKey = None,
) -> None:
    """Cancel a queued or running prediction and print it as JSON."""
    _show(lambda client: client.predictions.cancel(prediction_id), base_url, api_key)
