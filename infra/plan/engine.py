"""Evaluate a Pulumi Python program offline and record every resource it declares.

The program is the real one (`__main__.py` of the project directory, the same file `pulumi
up` runs). It runs in-process against the SDK's mock monitor in *update* mode (in preview
mode, outputs a mock does not return stay unknown and `apply` callbacks never run), with the
stack file's config loaded the way the Pulumi engine would hand it over. We record each
registration's inputs ourselves (the mock monitor keeps only outputs), with its parent and
provider, then check every input against the SDK's typed declarations.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import linecache
import logging
import os
import runpy
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _ensure_event_loop, _sync_await

from infra.config import ConfigError, read_project, read_stack_file, stack_file
from infra.config.loading import load_yaml, yaml_read_once
from infra.plan.mocks import MOCK_ACCOUNT_ID, PlanMocks
from infra.plan.schema import UnknownProperty, check_inputs
from infra.plan.sdk_runtime import replaced, sdk_settings
from infra.plan.secrets import (
    PassphraseCrypter,
    SecretsError,
    contains_secure,
    decrypt_value,
    is_secure,
    stack_crypter,
)

SECRET_PLACEHOLDER = "[secret]"
_RUN_LOCK = threading.Lock()  # the Pulumi runtime is process-global: one plan at a time


class PlanError(Exception):
    """The program cannot be planned as written (bad config, a user error in the program, an
    input the real provider would reject). The message is for the user; exit code 2."""


class ProgramError(PlanError):
    """The program raised an exception (a bug in it, or an SDK error it caused). The message
    names the program's own frame (file:line inside the project and the line's text);
    `traceback` is the full Python traceback, for `llmcloud plan --debug`."""

    def __init__(self, message: str, traceback_text: str) -> None:
        super().__init__(message)
        self.traceback = traceback_text


class _Failures:
    """The exceptions raised inside `Output.apply` callbacks, with the traceback they had
    there: the SDK re-raises a failed callback from its own task loop at the end of the
    program, by then without the frames of the program that raised it."""

    def __init__(self) -> None:
        self.first: list[tuple[BaseException, traceback.StackSummary]] = []

    def wrap(self, func: Any) -> Any:
        failures = self.first

        def callback(value: Any) -> Any:
            try:
                return func(value)
            except Exception as e:
                if len(failures) < 64:
                    failures.append((e, traceback.extract_tb(e.__traceback__)))
                raise

        return callback

    def first_failure(
        self, error: BaseException
    ) -> tuple[BaseException, traceback.StackSummary | None]:
        """The first callback failure in time (the SDK re-raises whichever task it awaits
        first), or `error` itself when no callback failed."""
        if self.first:
            return self.first[0]
        return error, None


def _program_frame(
    stack: traceback.StackSummary, project_dir: Path
) -> traceback.FrameSummary | None:
    """The innermost frame of the program's own code: a file inside the project directory,
    not an installed package (a virtualenv may live inside the project)."""
    root = str(project_dir)
    own = [
        f
        for f in stack
        if f.filename.startswith(root + os.sep)
        and f"{os.sep}site-packages{os.sep}" not in f.filename
    ]
    return own[-1] if own else None


def program_error(
    error: BaseException, project_dir: Path, stack: traceback.StackSummary | None = None
) -> ProgramError:
    """A ProgramError for an exception the program raised: the exception, the program's
    file:line and that line's text."""
    frames = traceback.extract_tb(error.__traceback__)
    if stack is not None:
        frames = traceback.StackSummary.from_list([*frames, *stack])
    frame = _program_frame(frames, project_dir)
    message = f"the program raised {type(error).__name__}: {error}"
    if frame is not None:
        where = Path(frame.filename).relative_to(project_dir)
        line = (linecache.getline(frame.filename, frame.lineno or 0) or "").strip()
        message += f"\n  at {where}:{frame.lineno}" + (f": {line}" if line else "")
    else:
        message += "\n  (no frame of the program's own files in the traceback)"
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    if stack is not None:
        text += "raised in an Output.apply callback:\n" + "".join(stack.format())
    return ProgramError(message, text)


@dataclass
class Resource:
    """One registration, as the engine (and CrossGuard) sees it."""

    urn: str
    type: str
    name: str
    parent: str | None
    custom: bool
    inputs: dict[str, Any]
    provider: str | None = None
    id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    protect: bool = False
    remote: bool = False
    aliases: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "inputs": self.inputs,
            "aliases": self.aliases,
        }


@dataclass
class Plan:
    """Everything one evaluation recorded."""

    project: str
    stack: str
    project_dir: Path
    stack_file: Path
    resources: list[Resource]
    outputs: dict[str, Any]
    secret_outputs: set[str]
    warnings: list[str]
    elapsed_s: float
    notices: list[dict[str, Any]] = field(default_factory=list)
    region: str | None = None  # the stack's aws:region, which the mocks answered for

    def _indexes(self) -> tuple[dict[str, Resource], dict[str, list[Resource]], dict]:
        """(urn -> resource, type -> resources, parent -> children), built once per resource
        list: the lookups below run per resource in the policy and cost steps, and a scan
        each would make those steps quadratic in the stack's size."""
        cached = self.__dict__.get("_index_cache")
        if cached is None or cached[0] is not self.resources or cached[1] != len(self.resources):
            by_urn: dict[str, Resource] = {}
            by_type: dict[str, list[Resource]] = {}
            by_parent: dict[str | None, list[Resource]] = {}
            for r in self.resources:
                by_urn.setdefault(r.urn, r)
                by_type.setdefault(r.type, []).append(r)
                by_parent.setdefault(r.parent, []).append(r)
            cached = (self.resources, len(self.resources), (by_urn, by_type, by_parent))
            self.__dict__["_index_cache"] = cached
        return cached[2]

    def by_type(self, token: str) -> list[Resource]:
        return list(self._indexes()[1].get(token, ()))

    def get(self, urn: str) -> Resource:
        return self._indexes()[0][urn]

    def children(self, urn: str | None) -> list[Resource]:
        return list(self._indexes()[2].get(urn, ()))

    def ancestors(self, resource: Resource) -> Iterator[Resource]:
        index = self._indexes()[0]
        parent = resource.parent
        while parent and parent in index:
            yield index[parent]
            parent = index[parent].parent

    def component_of(self, resource: Resource) -> Resource | None:
        """The nearest enclosing component (non-custom resource other than the stack)."""
        for ancestor in self.ancestors(resource):
            if not ancestor.custom and ancestor.type != "pulumi:pulumi:Stack":
                return ancestor
        return None

    @property
    def stack_urn(self) -> str | None:
        return next((r.urn for r in self.resources if r.type == "pulumi:pulumi:Stack"), None)


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The SDK's mock monitor, keeping what it discards: inputs, parent, provider, options."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.recorded: list[Resource] = []
        self._aliases: dict[str, list[str]] = {}  # URN -> the old URNs it answers to
        self._lock = threading.Lock()

    def RegisterResource(self, request):
        """What MockMonitor.RegisterResource does, deserializing the inputs once and keeping
        them (the stock monitor hands them to the mocks and drops them)."""
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            with self._lock:
                self.recorded.append(
                    Resource(
                        urn=urn,
                        type=request.type,
                        name=request.name,
                        parent=None,
                        custom=False,
                        inputs={},
                    )
                )
            return resource_pb2.RegisterResourceResponse(urn=urn)
        _ensure_event_loop()
        inputs = rpc.deserialize_properties(request.object)
        if isinstance(self.mocks, PlanMocks):
            resource_id, state = self.mocks.resource_state(
                request.type, request.name, dict(inputs), urn
            )
            self._register_synthetic()
        else:
            resource_id, state = self.mocks.new_resource(
                pulumi.runtime.MockResourceArgs(
                    typ=request.type,
                    name=request.name,
                    inputs=inputs,
                    provider=request.provider,
                    resource_id=request.importId,
                    custom=request.custom or False,
                )
            )
        response_object = _serialized(state)
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, resource_id, state)
        record = Resource(
            urn=urn,
            type=request.type,
            name=request.name,
            parent=request.parent or None,
            custom=bool(request.custom),
            inputs=_plain(inputs),
            provider=request.provider.rsplit("::", 1)[0] if request.provider else None,
            id=resource_id,
            outputs=_plain(state),
            dependencies=list(request.dependencies),
            property_dependencies={
                key: list(deps.urns) for key, deps in request.propertyDependencies.items()
            },
            protect=bool(request.protect),
            remote=bool(request.remote),
            aliases=self._alias_urns(request),
        )
        with self._lock:
            self.recorded.append(record)
        return resource_pb2.RegisterResourceResponse(
            urn=urn, id=resource_id, object=response_object
        )

    def _register_synthetic(self) -> None:
        """Make the resources a component's outputs reference resolvable by URN."""
        for child_urn, (_, child_id, child_state) in self.mocks.synthetic.items():
            if child_urn not in self.resources:
                self.resources[child_urn] = pulumi_mocks.MockMonitor.ResourceRegistration(
                    child_urn, child_id, child_state
                )

    def _alias_urns(self, request) -> list[str]:
        """The old URNs a resource answers to: its own `aliases` (URNs, or specs resolved the
        way the engine resolves them), then those inherited from an aliased parent (the
        engine moves a child along with its parent)."""
        urns = list(request.aliasURNs)
        for alias in request.aliases:
            if alias.WhichOneof("alias") == "urn":
                urns.append(alias.urn)
                continue
            spec = alias.spec
            parent = "" if spec.noParent else (spec.parentUrn or request.parent)
            urn = self.make_urn(parent, spec.type or request.type, spec.name or request.name)
            if spec.stack or spec.project:
                head, project, rest = urn.split("::", 2)
                stack = spec.stack or head.removeprefix("urn:pulumi:")
                urn = f"urn:pulumi:{stack}::{spec.project or project}::{rest}"
            urns.append(urn)
        parent_name = request.parent.rsplit("::", 1)[-1]
        for parent_alias in self._aliases.get(request.parent, ()):
            # A child named after its parent (`f"{name}-data"`) moves with the parent's old
            # name, as the SDK's and engine's inherited child alias does.
            name = request.name
            if name.startswith(parent_name):
                name = parent_alias.rsplit("::", 1)[-1] + name[len(parent_name) :]
            urns.append(self.make_urn(parent_alias, request.type, name))
        found = [u for u in dict.fromkeys(urns) if u]
        if found:
            self._aliases[self.make_urn(request.parent, request.type, request.name)] = found
        return found

    def ReadResource(self, request):
        response = super().ReadResource(request)
        with self._lock:
            self.recorded.append(
                Resource(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    parent=request.parent or None,
                    custom=True,
                    inputs=_plain(rpc.deserialize_properties(request.properties)),
                    provider=request.provider.rsplit("::", 1)[0] if request.provider else None,
                    id=request.id,
                )
            )
        return response


def _serialized(state: dict[str, Any]) -> Any:
    """`rpc.serialize_properties(state)` as the stock monitor awaits it, without a fresh
    event-loop run per registration: a mock's answer is plain data (nothing to wait for), so
    the coroutine finishes on its first step. One that waits (a resource reference whose URN
    is not resolved yet) is resumed on the thread's loop, as the SDK would have run it."""
    coroutine = rpc.serialize_properties(state, {})
    try:
        waiting = coroutine.send(None)
    except StopIteration as done:
        return done.value
    return _sync_await(_resumed(coroutine, waiting))


async def _resumed(coroutine: Any, waiting: Any) -> Any:
    """Run the rest of a coroutine that suspended on `waiting` (a future, or None for a bare
    yield) inside a task, as if it had been awaited there from the start."""
    while True:
        if waiting is None:
            await asyncio.sleep(0)
        else:
            waiting._asyncio_future_blocking = False  # taken over, as a task's step does
            with suppress(Exception):  # the coroutine reads the result (or error) itself
                await asyncio.wait([waiting])
        try:
            waiting = coroutine.send(None)
        except StopIteration as done:
            return done.value


def _plain(value: Any) -> Any:
    """Recorded values as plain JSON data: secrets masked, resource references as URNs."""
    kind = type(value)  # fast paths first: this runs on every input and output value
    if kind is str or kind is bool or kind is int or value is None:
        return value
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is dict and rpc._special_sig_key not in value:
        return {k: _plain(v) for k, v in value.items()}
    if kind is list:
        return [_plain(v) for v in value]
    if rpc.is_rpc_secret(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pulumi.Resource):
        return f"<resource {type(value).__name__}>"
    if isinstance(value, float) and value.is_integer():
        return int(value)  # the wire carries every number as a double
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


class _LogCollector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.warnings: list[str] = []
        self.errors: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        (self.errors if record.levelno >= logging.ERROR else self.warnings).append(message)


def engine_config(
    raw: dict[str, Any], project: str, crypter: PassphraseCrypter | None = None
) -> tuple[dict[str, str], list[str]]:
    """The stack file's config as the Pulumi engine hands it to a program: every key
    namespaced, objects as JSON strings, secrets decrypted with the stack's passphrase
    (`crypter`) or, without it, a placeholder; every key holding a secret listed as secret."""
    config: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        full = key if ":" in key else f"{project}:{key}"
        if contains_secure(value):
            secret_keys.append(full)
            value = (
                decrypt_value(value, crypter, full) if crypter is not None else _placeholders(value)
            )
        if isinstance(value, dict | list):
            config[full] = json.dumps(value, default=str)  # YAML dates are strings to Pulumi
        elif isinstance(value, bool):
            config[full] = "true" if value else "false"
        else:
            config[full] = str(value)
    return config, secret_keys


def _placeholders(value: Any) -> Any:
    if is_secure(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, dict):
        return {k: _placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_placeholders(v) for v in value]
    return value


_MIN_MASKED_CHARS = 4  # shorter secrets ("1", "on") would mask unrelated values


def _secret_texts(config: dict[str, str], secret_keys: list[str]) -> tuple[str, ...]:
    """The plaintexts of the secret config values the program was handed (every string leaf
    of a structured secret too), longest first."""
    found: set[str] = set()

    def leaves(value: Any) -> None:
        if isinstance(value, dict):
            for v in value.values():
                leaves(v)
        elif isinstance(value, list):
            for v in value:
                leaves(v)
        elif isinstance(value, str) and len(value) >= _MIN_MASKED_CHARS:
            found.add(value)

    for key in secret_keys:
        text = config.get(key)
        if text is None or text == SECRET_PLACEHOLDER:
            continue
        found.add(text)
        with suppress(json.JSONDecodeError):
            leaves(json.loads(text))
    found = {t for t in found if len(t) >= _MIN_MASKED_CHARS and t != SECRET_PLACEHOLDER}
    return tuple(sorted(found, key=len, reverse=True))


def _mask(value: Any, secrets: tuple[str, ...]) -> Any:
    """`value` with every occurrence of a secret's plaintext replaced by the placeholder."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            if secret in value:
                value = value.replace(secret, SECRET_PLACEHOLDER)
        return value
    if isinstance(value, dict):
        return {k: _mask(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask(v, secrets) for v in value]
    return value


def _environment_config() -> tuple[dict[str, str], list[str]]:
    """`PULUMI_CONFIG` (a JSON object of namespaced keys to values, as the CLI hands config
    to a program) and `PULUMI_CONFIG_SECRET_KEYS` (a JSON list), when set: they override the
    stack file, as they would for the program under the CLI."""
    config: dict[str, str] = {}
    secret: list[str] = []
    for name, target in (("PULUMI_CONFIG", config), ("PULUMI_CONFIG_SECRET_KEYS", secret)):
        text = os.environ.get(name)
        if not text:
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise PlanError(f"{name}: not JSON ({e.msg} at character {e.pos})") from None
        if isinstance(target, dict) and isinstance(value, dict):
            target.update(
                {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
            )
        elif isinstance(target, list) and isinstance(value, list):
            target.extend(str(k) for k in value)
        else:
            kind = "an object of key: value" if isinstance(target, dict) else "a list of keys"
            raise PlanError(f"{name}: must be a JSON {kind}, got {type(value).__name__}")
    return config, secret


def _abandon_unfinished_work() -> None:
    """What a failed program leaves behind, cleared before the next plan in this process.

    Registrations and Outputs still running on the thread's event loop are cancelled and
    drained; failed ones in the SDK's set of tracked Outputs (which `set_mocks` does not
    renew) are dropped, or the next plan would await them and fail with this one's error.
    Then the run's garbage is collected at once, with the loop's "exception was never
    retrieved" reports silenced (the error is reported once, as the PlanError): left to a
    later collection, those finalizers run inside whatever code allocates next: inside an
    `ast.parse` (the rule registry reads its sources) they aborted it on CPython 3.11.7 with
    "AST constructor recursion depth mismatch" (python/cpython#106905 is that error's known
    cause; whether its fix reaches 3.11 was not checked here)."""
    loop = _ensure_event_loop()
    unfinished = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in unfinished:
        task.cancel()
    if unfinished:
        loop.run_until_complete(asyncio.gather(*unfinished, return_exceptions=True))
    del unfinished
    with settings.SETTINGS.lock:
        settings.SETTINGS.outputs.clear()
    handler = loop.get_exception_handler()

    def unless_unretrieved(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if "never retrieved" in context.get("message", ""):
            return
        if handler is None:
            loop.default_exception_handler(context)
        else:
            handler(loop, context)

    loop.set_exception_handler(unless_unretrieved)
    try:
        gc.collect()
    finally:
        loop.set_exception_handler(handler)


def _recorded_apply_failures(failures: _Failures) -> AbstractContextManager[None]:
    original = pulumi.Output.apply

    def apply(self: pulumi.Output, func: Any, run_with_unknowns: bool = False) -> pulumi.Output:
        return original(self, failures.wrap(func), run_with_unknowns)

    return replaced(pulumi.Output, "apply", apply)


@contextmanager
def _program_environment(project_dir: Path) -> Iterator[None]:
    """cwd and sys.path as the Python language host sets them; PULUMI_CONFIG cleared so a
    stray environment cannot leak config into the plan."""
    old_cwd, old_path = os.getcwd(), list(sys.path)
    saved_env = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("PULUMI_CONFIG")}
    os.chdir(project_dir)
    sys.path.insert(0, str(project_dir))
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.path[:] = old_path
        os.environ.update(saved_env)


def project_virtualenv(project_dir: Path, runtime: Any) -> Path | None:
    """The virtualenv Pulumi.yaml runs the program in (`runtime.options.virtualenv`, relative
    to the project; with `toolchain: uv`, `.venv` by default), or None when it names none."""
    options = runtime.get("options") if isinstance(runtime, dict) else None
    if not isinstance(options, dict):
        return None
    venv = options.get("virtualenv")
    if not venv and options.get("toolchain") == "uv":
        venv = ".venv"
    if not venv:
        return None
    path = Path(str(venv)).expanduser()
    return path if path.is_absolute() else project_dir / path


def _check_virtualenv(project_dir: Path, runtime: Any) -> dict[str, Any] | None:
    """The program's imports live in its virtualenv: plan it from there, or say how. A
    virtualenv that does not exist yet (`pulumi install` or the first `pulumi up` creates it)
    is no obstacle: the program is planned with this interpreter's packages, and the returned
    notice says so."""
    venv = project_virtualenv(project_dir, runtime)
    if venv is None or Path(sys.prefix).resolve() == venv.resolve():
        return None
    where = f"{project_dir / 'Pulumi.yaml'}: runtime.options.virtualenv is {str(venv)!r}"
    checkout = Path(__file__).resolve().parents[2]
    source = str(checkout) if (checkout / "pyproject.toml").is_file() else "llmcloud"
    if not (venv / "pyvenv.cfg").is_file():
        return {
            "kind": "virtualenv",
            "message": f"{where}, which does not exist yet (`pulumi install` creates it): "
            f"planned with the packages of {sys.prefix}",
        }
    if not any(venv.glob("lib/python*/site-packages/llmcloud-*.dist-info")):
        raise PlanError(
            f"{where}, which has no llmcloud: the program imports its packages from there. "
            f"Install it there ({venv}/bin/pip install {source}) and run {venv}/bin/llmcloud plan"
        )
    raise PlanError(
        f"{where}; run that environment's llmcloud, where the program's packages are: "
        f"{venv}/bin/llmcloud plan --project {project_dir}"
    )


def evaluate(
    project_dir: Path | str,
    stack: str,
    *,
    config_overrides: dict[str, Any] | None = None,
    check_schema: bool = True,
) -> Plan:
    """Run the project's program for `stack` under mocks and return what it declared.

    Raises PlanError for anything the user must fix (bad config, a RunError or logged error
    in the program, an input property the provider does not have).
    """
    project_dir = Path(project_dir).resolve()
    with yaml_read_once():  # Pulumi.yaml, then the stack file: each parsed once
        return _evaluate(project_dir, stack, config_overrides, check_schema)


def _evaluate(
    project_dir: Path, stack: str, config_overrides: dict[str, Any] | None, check_schema: bool
) -> Plan:
    try:
        project = read_project(project_dir)
        path = stack_file(project_dir, stack)
        raw = read_stack_file(path)
    except ConfigError as e:
        raise PlanError(str(e)) from None
    runtime = project.get("runtime")
    runtime_name = runtime.get("name") if isinstance(runtime, dict) else runtime
    if runtime_name != "python":
        raise PlanError(
            f"{project_dir / 'Pulumi.yaml'}: runtime is {runtime_name!r}; llmcloud plan runs Python programs"
        )
    venv_notice = _check_virtualenv(project_dir, runtime)
    main = project.get("main") or "__main__.py"
    program = project_dir / main
    if program.is_dir():
        program = program / "__main__.py"
    if not program.is_file():
        raise PlanError(f"{program}: no program to run (Pulumi.yaml's main, or __main__.py)")
    raw = {**raw, **(config_overrides or {})}
    try:
        crypter = (
            stack_crypter(load_yaml(path) or {})
            if any(map(contains_secure, raw.values()))
            else None
        )
    except SecretsError as e:
        raise PlanError(
            f"{path}: {e} (PULUMI_CONFIG_PASSPHRASE / PULUMI_CONFIG_PASSPHRASE_FILE)"
        ) from None
    try:
        config, secret_keys = engine_config(raw, project["name"], crypter)
    except SecretsError as e:
        raise PlanError(f"{path}: {e}") from None
    undecrypted = [] if crypter is not None else list(secret_keys)
    env_config, env_secret_keys = _environment_config()
    config.update(env_config)
    undecrypted = [k for k in undecrypted if k not in env_config]
    secret_keys = list(dict.fromkeys([*secret_keys, *env_secret_keys]))
    region = str(config.get("aws:region", "us-east-1"))

    with _RUN_LOCK:
        started = time.perf_counter()
        mocks = PlanMocks(
            region=region, account_id=MOCK_ACCOUNT_ID, salt=f"{project['name']}/{stack}"
        )
        monitor = _RecordingMonitor(mocks)
        collector = _LogCollector()
        logger = logging.getLogger(f"llmcloud.plan.{project['name']}.{stack}")
        logger.propagate = False
        logger.handlers[:] = [collector]
        logger.setLevel(logging.WARNING)

        settings.set_root_resource(None)  # type: ignore[arg-type]
        set_all_config(config, secret_keys)
        pulumi.runtime.set_mocks(
            mocks,
            project=project["name"],
            stack=stack,
            preview=False,
            logger=logger,
            monitor=monitor,
        )
        exports: dict[str, Any] = {}
        secret_exports: set[str] = set()

        async def program_and_exports() -> None:
            runpy.run_path(str(program), run_name="__main__")
            root = settings.get_root_resource()
            for name, value in dict(getattr(root, "outputs", {})).items():
                output = pulumi.Output.from_input(value)
                exports[name] = await output.future()
                if await output.is_secret():
                    secret_exports.add(name)

        failures = _Failures()
        with (
            _program_environment(project_dir),
            sdk_settings(),
            _recorded_apply_failures(failures),
        ):
            failed = True
            try:
                _sync_await(run_pulumi_func(program_and_exports))
                failed = False
            except (ConfigError, pulumi.RunError) as e:
                raise PlanError(str(e)) from None
            except Exception as e:
                first, stack = failures.first_failure(e)
                raise program_error(first, project_dir, stack) from e
            finally:
                settings.set_root_resource(None)  # type: ignore[arg-type]
                set_all_config({}, [])
                if failed:
                    _abandon_unfinished_work()
        elapsed = time.perf_counter() - started

    if collector.errors:
        raise PlanError(
            "the program logged errors:\n" + "\n".join(f"  - {m}" for m in collector.errors)
        )

    resources = sorted(monitor.recorded, key=lambda r: r.urn)
    secrets = _secret_texts(config, secret_keys)
    if secrets:
        # A program may read a secret with `config.require` (the SDK only warns): the plan,
        # uploaded as a CI artifact, never carries a decrypted value in plain text.
        for r in resources:
            r.inputs, r.outputs = _mask(r.inputs, secrets), _mask(r.outputs, secrets)
    duplicates = sorted({a.urn for a, b in itertools.pairwise(resources) if a.urn == b.urn})
    if duplicates:
        # The mock monitor accepts a URN twice; the engine refuses the second registration.
        raise PlanError(
            "two resources share a URN (same type, name and parent type); the engine would "
            "refuse the second:\n" + "\n".join(f"  - {u}" for u in duplicates)
        )
    notices = _notices(resources, mocks, undecrypted)
    if venv_notice is not None:
        notices.append(venv_notice)
    if check_schema:
        problems: list[UnknownProperty] = []
        for r in resources:
            if r.custom:
                problems.extend(check_inputs(r.urn, r.type, r.inputs))
        if problems:
            raise PlanError(
                "inputs the provider would reject:\n"
                + "\n".join(f"  - {p.message()}" for p in problems)
            )
    outputs = {
        k: (SECRET_PLACEHOLDER if k in secret_exports else _mask(_plain(v), secrets))
        for k, v in sorted(exports.items())
    }
    return Plan(
        project=project["name"],
        stack=stack,
        project_dir=project_dir,
        stack_file=path,
        resources=resources,
        outputs=outputs,
        secret_outputs=secret_exports,
        warnings=collector.warnings,
        elapsed_s=elapsed,
        notices=notices,
        region=region,
    )


def _notices(
    resources: list[Resource], mocks: PlanMocks, secret_keys: list[str]
) -> list[dict[str, Any]]:
    """What the offline plan synthesized or could not see, for the report's `notices`."""
    notices: list[dict[str, Any]] = []
    for token, count in sorted(mocks.synthesized_lookups.items()):
        notices.append(
            {
                "kind": "lookup",
                "token": token,
                "count": count,
                "message": f"{count} × {token} answered with synthesized data (its declared "
                "result type; ids and names are not the account's)",
            }
        )
    for r in resources:
        if r.remote:
            notices.append(
                {
                    "kind": "remote-component",
                    "urn": r.urn,
                    "token": r.type,
                    "message": f"{r.type} {r.name!r}: children not evaluated offline (a remote "
                    "component's resources are created by its provider plugin); outputs "
                    "synthesized from its SDK's declared types",
                }
            )
    for key in secret_keys:
        notices.append(
            {
                "kind": "secret",
                "key": key,
                "message": f"config {key!r} is a secret that was not decrypted (set "
                "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE); the program saw "
                f"{SECRET_PLACEHOLDER!r}",
            }
        )
    return notices
