"""Where tenshu keeps things, and which model it uses when none is named.

This package is the one place that reads the environment (TENSHU_HOME, XDG_DATA_HOME, and the
variables named by `api_key_env` for upstream keys), and the one that parses tenshu.toml into
validated, frozen settings: [server] here, the models, tiers, routes and budgets in routing.py.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from tenshu.config import ollama_store
from tenshu.config.agents import AgentsSettings, parse_agents
from tenshu.config.context import ContextSettings, parse_context
from tenshu.config.integrations import IntegrationsSettings, parse_integrations
from tenshu.config.jobs import JobsSettings
from tenshu.config.learn import LearnSettings
from tenshu.config.memory import MemorySettings
from tenshu.config.routing import (
    BudgetSpec,
    ModelSpec,
    RouterSettings,
    RouteSpec,
    RoutingSettings,
    check_quantization,
    parse_routing,
)
from tenshu.core.keep_alive import FOREVER, keep_alive_seconds

# The built-in chat model: a tiny model tenshu's own trainer built (`tenshu train tiny`),
# shipped inside the package so everything works offline on a fresh machine.
DEFAULT_MODEL_NAME = "tenshu-tiny"
DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "assets" / DEFAULT_MODEL_NAME


def tenshu_home() -> Path:
    """TENSHU_HOME, else tenshu/ under the user's data directory (XDG_DATA_HOME or
    ~/.local/share)."""
    if home := os.environ.get("TENSHU_HOME"):
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "tenshu"


def state_db_path() -> Path:
    """The state database (keys, audit log): state.db in the tenshu home."""
    return tenshu_home() / "state.db"


# -- owner-only files: the home holds key hashes, the audit log and traces --------------------


def private_dir(path: Path) -> Path:
    """`path` as a directory only its owner may enter: made (with its parents) if missing,
    tightened if it lets anyone else in."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    _owner_only(path)
    return path


def private_file(path: Path) -> Path:
    """`path` as a file only its owner may read: made empty (in a private parent, if that is
    the tenshu home) if missing, tightened if it is readable by others."""
    if path.parent == tenshu_home():
        private_dir(path.parent)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        _owner_only(path)
    return path


def _owner_only(path: Path) -> None:
    if os.name != "posix":
        return  # Windows: the profile directory's ACL already keeps other users out
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        path.chmod(mode & 0o700)


def models_dir() -> Path:
    """Where `tenshu pull` puts models, and where `--model NAME` looks first: models/ in the
    home."""
    return tenshu_home() / "models"


def ollama_models_dir() -> Path:
    """Ollama's model store: OLLAMA_MODELS (as Ollama reads it), else ~/.ollama/models."""
    if store := os.environ.get("OLLAMA_MODELS"):
        return Path(store).expanduser()
    return Path.home() / ".ollama" / "models"


def resolve_model(model: str | None) -> str:
    """A model the user named (see `model_source`), or the built-in default."""
    return model_source(model)[1] if model else str(DEFAULT_MODEL_DIR)


# -- the server's settings: tenshu.toml, then command-line flags ---------------------------------

DEFAULT_PORT = 7311  # clashes with none of Ollama (11434), LM Studio (1234) or vLLM (8000)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class ServerSettings:
    """Everything `tenshu serve` needs, validated once.

    require_keys: None = automatic (required as soon as one API key exists, and always when
        listening beyond loopback), True / False to force it; False is refused off loopback.
    cors_origins: browser origins allowed to call the API ("*" allows any).
    allowed_hosts: extra Host header names accepted while bound to loopback (besides localhost,
        127.0.0.1 and ::1); the check stops DNS-rebinding attacks from web pages.
    max_queue: requests that may wait for each local model's engine before new ones get 429 +
        Retry-After (requests that go upstream wait at the upstream, not here).
    grace_seconds: on SIGTERM/SIGINT, how long in-flight requests may run before they are ended.
    max_connections: open HTTP connections at once; one more is answered 503 and closed.
    max_header_kib: the request line and headers of one request; more is a 431.
    header_timeout: seconds from a connection's first byte (or its opening) until the request's
        headers are complete; slower (slowloris) or silent connections are closed.
    body_timeout, body_min_kib_per_s: a body must arrive within body_timeout seconds, extended
        by one second per body_min_kib_per_s KiB received (Apache's mod_reqtimeout MinRate).
    keep_alive: seconds an idle connection is kept open between requests (HTTP's keep-alive;
        a model's is model_keep_alive).
    model_keep_alive: how long an embedded model stays loaded after its last request, as
        Ollama's keep_alive: "5m", "1h", a number of seconds, 0 (unload after each request) or
        -1 (forever); a model's own `keep_alive` and a request's override it. Empty (the
        default): forever. Ollama unloads after 5 minutes because it loads models on demand;
        tenshu's promise is an always-on model that answers at once, so a model stays loaded
        unless its owner asks for memory back (model_keep_alive = "5m" behaves as Ollama).
    load_timeout: seconds a request waits for a model that is still loading before a 503.
    store_url: the state database, from [store] url: a SQLite path or a postgresql:// URL;
        empty: state.db in the home.
    max_loras, max_lora_rank: LoRA adapters served at once (each a model of its own), and the
        highest rank accepted (vLLM's names).
    quantization: for embedded models without their own `quantization` key: "int8" or "int4"
        (quantize a float checkpoint on load, cached beside it or in $TENSHU_HOME/cache),
        "gptq" or "awq" (the checkpoint must be one); empty: as the checkpoint is.
    kv_cache_dtype: "auto" (the model's compute dtype; bf16 for a bf16 model on a CPU with
        native bf16) or "bfloat16"/"float32" ("float16" on CUDA): bf16 holds twice the context
        of a float32-computed model per GiB (vLLM's name).
    int8_activations: quantized models' decoding products round activations to int8 and
        multiply in integers on CPU, as llama.cpp does, and prompts multiply in bf16 where the
        CPU does so natively (faster); false keeps float32 ones.
    """

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    models: tuple[ModelSpec, ...] = ()
    tiers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    routes: tuple[RouteSpec, ...] = ()
    budgets: tuple[BudgetSpec, ...] = ()
    router: RouterSettings = RouterSettings()
    embedder: bool = True
    require_keys: bool | None = None
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    max_body_mib: float = 16.0
    max_queue: int = 256
    grace_seconds: float = 10.0
    max_connections: int = 512
    max_header_kib: float = 64.0
    header_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_kib_per_s: float = 64.0
    keep_alive: float = 5.0
    model_keep_alive: str | float = ""
    load_timeout: float = 300.0
    kv_cache_memory_gib: float = 2.0
    kv_cache_dtype: str = "auto"
    int8_activations: bool = True
    max_num_seqs: int = 64
    max_loras: int = 4
    max_lora_rank: int = 64
    dtype: str = "auto"
    device: str = "auto"
    quantization: str = ""
    log_level: str = "info"
    store_url: str = ""
    memory: MemorySettings = MemorySettings()
    agents: AgentsSettings = AgentsSettings()  # [agents.*], [mcp.servers.*], [approvals]
    context: ContextSettings = ContextSettings()  # [context.*], [notify.*]
    integrations: IntegrationsSettings = IntegrationsSettings()  # [integrations.*]

    def __post_init__(self) -> None:
        def bad(key: str, problem: str) -> ValueError:
            return ValueError(f"server.{key}: {problem}, got {getattr(self, key)!r}")

        if not 0 <= self.port <= 65535:
            raise bad("port", "must be a port number (0-65535)")
        if self.max_body_mib <= 0:
            raise bad("max_body_mib", "must be > 0")
        if self.max_queue < 0:
            raise bad("max_queue", "must be >= 0")
        if self.grace_seconds < 0:
            raise bad("grace_seconds", "must be >= 0")
        if self.max_connections < 1:
            raise bad("max_connections", "must be >= 1")
        for key in ("max_header_kib", "header_timeout", "body_timeout", "body_min_kib_per_s",
                    "keep_alive", "load_timeout"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be > 0")
        if self.kv_cache_memory_gib <= 0:
            raise bad("kv_cache_memory_gib", "must be > 0")
        if self.kv_cache_dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise bad("kv_cache_dtype", "must be auto, bfloat16, float16 or float32")
        if self.model_keep_alive != "":
            try:
                keep_alive_seconds(self.model_keep_alive)
            except ValueError as exc:
                raise ValueError(f"server.model_keep_alive: {exc}") from None
        if self.max_num_seqs < 1:
            raise bad("max_num_seqs", "must be >= 1")
        if self.max_loras < 1:
            raise bad("max_loras", "must be >= 1")
        if self.max_lora_rank < 1:
            raise bad("max_lora_rank", "must be >= 1")
        try:
            check_quantization(self.quantization)
        except ValueError as exc:
            raise ValueError(f"server.{exc}") from None
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            raise bad("log_level", "must be one of critical, error, warning, info, debug")
        _ = self.routing  # checks the models, tiers, routes and budgets against each other
        if self.require_keys is False and not self.loopback:
            raise ValueError(
                f"server.require_keys is false but the server would listen on {self.host}: "
                "API keys are required beyond loopback (create one with `tenshu keys create`)"
            )

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")

    @property
    def keys_required(self) -> bool | None:
        """What the server's authentication follows: True beyond loopback, for the server's
        whole life (revoking the last key must not open it to the network); on loopback,
        require_keys (None: required while at least one key exists)."""
        return True if not self.loopback else self.require_keys

    @property
    def store(self) -> str:
        """Where the state database is: [store] url, else state.db in the home."""
        return self.store_url or str(state_db_path())

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mib * 1024 * 1024)

    def model_keep_alive_for(self, spec: ModelSpec) -> float:
        """Seconds `spec` stays loaded when idle (FOREVER unless keep_alive is set)."""
        for value in (spec.keep_alive, self.model_keep_alive):
            if value != "":
                return keep_alive_seconds(value)
        return FOREVER

    def served_models(self) -> tuple[ModelSpec, ...]:
        """The configured models, or the built-in default when there are none."""
        return self.models or (ModelSpec(DEFAULT_MODEL_NAME, str(DEFAULT_MODEL_DIR)),)

    @property
    def routing(self) -> RoutingSettings:
        return RoutingSettings(self.served_models(), self.tiers, self.routes, self.budgets,
                               self.router)


def credential(env_name: str) -> str | None:
    """The secret in the environment variable an upstream model's `api_key_env` names."""
    return os.environ.get(env_name) or None if env_name else None


def config_path() -> Path:
    return tenshu_home() / "tenshu.toml"


def parse_model_arg(value: str) -> ModelSpec:
    """`SOURCE` or `NAME=SOURCE` (see `model_source`); the name defaults to the source's."""
    name, sep, source = value.partition("=")
    if not sep:
        name, source = "", value
    default_name, path = model_source(source)
    name = name or default_name
    if not name:
        raise ValueError(f"--model {value!r}: cannot tell the model's name; use NAME=PATH")
    return ModelSpec(name, path)


def model_source(source: str) -> tuple[str, str]:
    """(its default name, the file or directory to load) for what a person wrote as a model:
    a checkpoint directory or a .gguf file (named after it); a folder of models/ in the home
    (what `tenshu pull` made, named after it; a folder of one .gguf file stands for that file);
    or a model in Ollama's store, `ollama:NAME` or just `NAME` (named as written, loaded from
    its blob in place). A path that exists wins over the other readings."""
    if source.startswith(ollama_store.PREFIX):
        found = ollama_store.resolve(ollama_models_dir(), source)
        return source.removeprefix(ollama_store.PREFIX), str(found.blob)
    path = Path(source).expanduser()
    pulled = models_dir() / source
    if not path.exists() and source and ".." not in Path(source).parts and pulled.exists():
        path = pulled
    elif not path.exists() and not source.startswith(("/", ".", "~")) \
            and path.suffix != ".gguf" and ollama_store.parse_name(source) is not None:
        try:
            return source, str(ollama_store.resolve(ollama_models_dir(), source).blob)
        except ollama_store.OllamaModelNotFound as exc:
            raise ValueError(f"model {source!r}: no such file or directory, nor a model in "
                             f"{models_dir()}; and {exc}") from None
    name = path.stem if path.suffix == ".gguf" else path.resolve().name
    return name, str(_single_gguf(path))


def _single_gguf(path: Path) -> Path:
    """A folder of GGUF files without a checkpoint (a pull of `--include '*Q4_K_M.gguf'`)
    stands for its one .gguf file; with several, the person picks one."""
    if not path.is_dir() or (path / "config.json").exists():
        return path
    files = sorted(path.glob("*.gguf"))
    if len(files) > 1:
        raise ValueError(f"{path} holds {len(files)} GGUF files ({', '.join(f.name for f in files)}"
                         "); name the one to serve, e.g. --model " + str(files[0]))
    return files[0] if files else path


def load_server_settings(file: Path | None = None, **overrides) -> ServerSettings:
    """Read [server] and [[models]] from tenshu.toml (if it exists), then apply `overrides`
    (flags; None means not given). Any problem is one ValueError naming the key."""
    explicit = file is not None
    file = Path(file) if file is not None else config_path()
    values: dict = {}
    if file.exists():
        values = _server_table(file, _read_toml(file))
    elif explicit:
        raise ValueError(f"--config {file}: no such file")
    else:
        values = {"agents": parse_agents({}, tenshu_home() / "agents")}
    for key, value in overrides.items():
        if value is not None:
            values[key] = value
    try:
        return ServerSettings(**values)
    except TypeError as exc:  # a wrong type that reached the dataclass
        raise ValueError(f"{file}: {exc}") from exc


_ROUTING_KEYS = ("models", "tiers", "routes", "budgets", "router")


def _read_toml(file: Path) -> dict:
    try:
        return tomllib.loads(file.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{file}: not valid TOML: {exc}") from exc


def _section(file: Path, data: dict, name: str, settings: type):
    """The table `name` of a read tenshu.toml as `settings` (a dataclass), errors naming it."""
    from tenshu.config.routing import _build

    try:
        return _build(settings, data.get(name, {}), name)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None


def _load_section(file: Path | None, name: str, settings: type):
    """One table of tenshu.toml (its defaults when there is no file), for commands that work
    without a server."""
    file = file or config_path()
    return _section(file, _read_toml(file), name, settings) if file.exists() else settings()


def load_memory_settings(file: Path | None = None) -> MemorySettings:
    """[memory] of tenshu.toml, for commands that work without a server (tenshu ingest)."""
    return _load_section(file, "memory", MemorySettings)


def load_learn_settings(file: Path | None = None) -> LearnSettings:
    """[learn] of tenshu.toml: the learning loop's nightly job, which the server schedules
    and `tenshu jobs` shows and runs."""
    return _load_section(file, "learn", LearnSettings)


def load_jobs_settings(file: Path | None = None) -> JobsSettings:
    """[jobs] of tenshu.toml: when the job scheduler may start a heavy job (energy policy)."""
    return _load_section(file, "jobs", JobsSettings)


def store_location(file: Path | None = None) -> str:
    """Where the state database is, for commands that open it without a server: tenshu.toml's
    [store] url, else state.db in the home."""
    file = file or config_path()
    if file.exists() and (url := _store_url(file, _read_toml(file))):
        return url
    return str(state_db_path())


def _store_url(file: Path, data: dict) -> str:
    store = data.get("store", {})
    if not isinstance(store, dict) or set(store) - {"url"}:
        raise ValueError(f"{file}: [store] takes one key, url")
    url = store.get("url", "")
    if not isinstance(url, str):
        raise ValueError(f"{file}: store.url must be a string")
    if "://" in url and not url.startswith(("postgresql://", "postgresql+psycopg://",
                                            "sqlite://")):
        raise ValueError(f"{file}: store.url must be a SQLite path or a postgresql:// URL, "
                         f"not {url.split('://')[0]}://...")
    if url.startswith("postgresql://"):  # psycopg 3 is the driver tenshu installs
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return str(Path(url).expanduser()) if url and "://" not in url else url


_BOOLEAN_KEYS = ("embedder", "require_keys", "int8_activations")


def _server_table(file: Path, data: dict) -> dict:
    known = {f.name: f.type for f in fields(ServerSettings)
             if f.name not in (*_ROUTING_KEYS, "store_url", "memory", "agents", "context")}
    server = data.get("server", {})
    unknown = ((set(data) - {"server", "store", "memory", "learn", "jobs", "agents", "mcp",
                             "approvals", "context", "notify", "pipelines", "integrations",
                             *_ROUTING_KEYS})
               | (set(server) - set(known)))
    if unknown:
        raise ValueError(f"{file}: unknown key(s) {', '.join(sorted(unknown))}")
    values = {}
    for key, value in server.items():
        if key in ("cors_origins", "allowed_hosts"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{file}: server.{key} must be a list of strings")
            value = tuple(value)
        elif key in _BOOLEAN_KEYS and not isinstance(value, bool):
            raise ValueError(f"{file}: server.{key} must be true or false")
        elif isinstance(value, bool) and key not in _BOOLEAN_KEYS:
            raise ValueError(f"{file}: server.{key} must not be a boolean")
        values[key] = value
    entries = data.get("models", [])
    if not isinstance(entries, list):
        raise ValueError(f"{file}: models must be an array of tables ([[models]])")
    models = []
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            # a checkpoint: the name defaults to its directory's, and ~ is expanded
            entry = {**entry, "path": (spec := parse_model_arg(entry["path"])).path}
            entry.setdefault("name", spec.name)
        keep = entry.get("keep_alive") if isinstance(entry, dict) else None
        if isinstance(keep, (int, float)) and not isinstance(keep, bool):
            entry = {**entry, "keep_alive": str(keep)}  # -1 or 300: seconds, as "-1", "300"
        models.append(entry)
    try:
        routing = parse_routing(data, models)
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None
    values.update({k: v for k, v in routing.items() if v or k == "router"})
    if url := _store_url(file, data):
        values["store_url"] = url
    if "memory" in data:
        values["memory"] = _section(file, data, "memory", MemorySettings)
    try:
        values["agents"] = parse_agents(data, tenshu_home() / "agents")
        values["context"] = parse_context(data)
        values["context"].check_agents(values["agents"])
        values["integrations"] = parse_integrations(data)
        values["agents"].check_integrations(values["integrations"])
    except ValueError as exc:
        raise ValueError(f"{file}: {exc}") from None
    return values


def api_key_from_env() -> str | None:
    """The API key `tenshu chat --url` sends when no --key is given."""
    return os.environ.get("TENSHU_API_KEY") or None


def client_dir_from_env(name: str) -> Path | None:
    """The folder named by an environment variable that another program reads to find its own
    settings (CODEX_HOME, CLAUDE_CONFIG_DIR, XDG_CONFIG_HOME), for `tenshu connect` to find
    them where that program does; None when it is unset or empty."""
    value = os.environ.get(name)
    return Path(value).expanduser() if value else None
