"""Shared boto3 plumbing for the commands that talk to AWS (`stage`, `preflight`, `audit`).

Why one module: every boto3 command must take the same `--region` / `--endpoint-url`
flags, retry throttling the same way, identify itself the same way in CloudTrail
(`llmcloud/<version>` in the user agent) and turn the same AWS mistakes (no credentials,
expired SSO session, access denied, unreachable endpoint) into one sentence that says what
to do. Commands catch `AwsUsageError` and exit 2 with its message.

Typical use in a command::

    from infra.ops.awsclient import AwsUsageError, EndpointUrlOption, RegionOption, aws_errors, client

    @app.command()
    def preflight(region: RegionOption = None, endpoint_url: EndpointUrlOption = None):
        try:
            ec2 = client("ec2", region=region, endpoint_url=endpoint_url)
            with aws_errors("list instance type offerings"):
                ec2.describe_instance_type_offerings(...)
        except AwsUsageError as e:
            raise fail(str(e)) from None
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlparse

import typer

if TYPE_CHECKING:
    import boto3
    import botocore.loaders
    from botocore.client import BaseClient
    from botocore.config import Config

# Start-up: this module is imported by the CLI for its options, so botocore and boto3 are
# imported where a client is made or an AWS error is read, never at import (boto3 alone
# pulls in s3transfer; `llmcloud plan`/`diff`/`--help` need none of it). Clients are made
# from a botocore session: boto3's Session adds only resources and the s3transfer methods
# (upload_file, ...), which no llmcloud command uses.

__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "AwsUsageError",
    "EndpointUrlOption",
    "RegionOption",
    "S3Url",
    "aws_errors",
    "botocore_config",
    "client",
    "error_code",
    "parse_s3_url",
    "parse_timestamp",
    "session",
    "translate_error",
    "user_agent",
]

# Attempts per request, first try included. "adaptive" retries throttling and transient
# errors with exponential backoff and adds a client-side token bucket that slows every
# thread of the client down when AWS starts throttling.
DEFAULT_MAX_ATTEMPTS = 10
RETRY_MODE = "adaptive"

RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="AWS region (default: AWS_REGION / AWS_DEFAULT_REGION or the profile's region).",
        show_default=False,
    ),
]
EndpointUrlOption = Annotated[
    str | None,
    typer.Option(
        "--endpoint-url",
        help="Send AWS API calls to this URL instead of AWS (any AWS-compatible endpoint).",
        show_default=False,
    ),
]


class AwsUsageError(Exception):
    """A problem the user fixes (credentials, region, permissions, a wrong name): exit 2.

    The message is one sentence that names the problem and what to do about it.
    """


@functools.cache
def user_agent() -> str:
    """`llmcloud/<version>`: appended to boto3's user agent so our calls are findable."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("llmcloud")
    except importlib.metadata.PackageNotFoundError:
        version = "0+unknown"
    return f"llmcloud/{version}"


def botocore_config(*, max_pool_connections: int = 10, **overrides: Any) -> Config:
    """The botocore Config every llmcloud client uses: adaptive retries, our user agent.

    `max_pool_connections` must be at least the number of threads sharing the client, or
    threads wait for a connection (and urllib3 warns "connection pool is full").
    """
    from botocore.config import Config

    base = Config(
        retries={"mode": RETRY_MODE, "total_max_attempts": DEFAULT_MAX_ATTEMPTS},
        user_agent_extra=user_agent(),
        max_pool_connections=max_pool_connections,
        connect_timeout=10,
        read_timeout=120,
    )
    return base.merge(Config(**overrides)) if overrides else base


def _check_endpoint_url(endpoint_url: str | None) -> None:
    if endpoint_url is None:
        return
    parsed = urlparse(endpoint_url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise AwsUsageError(
            f"--endpoint-url {endpoint_url!r} is not a URL; use http(s)://HOST[:PORT], "
            "for example http://127.0.0.1:5000"
        )


@functools.cache
def _data_loader() -> botocore.loaders.Loader:
    """One botocore model loader per process: parsing the service JSON models is most of
    the cost of a new session (~0.5 s for S3), and the models never change."""
    return new_data_loader()


def new_data_loader() -> botocore.loaders.Loader:
    """A botocore model loader like botocore's own (same search path and data).

    The models are parsed into plain dicts: botocore's loader builds an OrderedDict per
    JSON object (a Python 2 habit; dicts keep their order, and botocore.model makes its
    own OrderedDicts where it wants them), which makes parsing endpoints.json and S3's
    model 2-3x slower: ~25 ms of every `llmcloud stage` run (json.loads timed on
    botocore 1.43's data files)."""
    import json

    import botocore.loaders

    class DictJSONFileLoader(botocore.loaders.JSONFileLoader):
        def _load_file(self, full_path: str, open_method: Any) -> Any:
            if not os.path.isfile(full_path):
                return None
            with open_method(full_path, "rb") as fp:
                return json.loads(fp.read().decode("utf-8"))

    return botocore.loaders.Loader(file_loader=DictJSONFileLoader())


# S3's (and most XML/JSON APIs') timestamp form: ISO 8601 in UTC, "2026-12-01T10:00:00.000Z".
_ISO_8601_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z\Z")


def parse_timestamp(value: Any) -> Any:
    """botocore's timestamp parser, without dateutil for ISO 8601 UTC strings.

    botocore parses every timestamp of a response with dateutil (~40 us each: a 1 000-key
    ListObjectsV2 page spends most of its parsing in LastModified); an ISO 8601 UTC string
    is read by `datetime.fromisoformat` into the same instant, UTC-aware. Anything else
    (RFC 822 headers, epoch numbers) goes to botocore's own parser. The AWS CLI replaces
    the parser the same way (awscli/customizations/scalarparse.py, set_parser_defaults).
    """
    if isinstance(value, str) and _ISO_8601_UTC.match(value):
        from datetime import datetime

        from dateutil.tz import tzutc

        return datetime.fromisoformat(value[:-1]).replace(tzinfo=tzutc())
    from botocore.utils import parse_timestamp as botocore_parse_timestamp

    return botocore_parse_timestamp(value)


def _botocore_session() -> Any:
    """A fresh botocore session (credentials and profile read from the environment now)
    sharing the process's model loader, parsing timestamps with `parse_timestamp`."""
    import botocore.session

    core = botocore.session.Session()
    core.register_component("data_loader", _data_loader())
    core.get_component("response_parser_factory").set_parser_defaults(
        timestamp_parser=parse_timestamp
    )
    return core


def _default_region(region: str | None) -> str | None:
    # AWS_REGION is what the AWS CLI v2 and the other SDKs read; botocore only reads
    # AWS_DEFAULT_REGION (and the profile), which remain the fallback.
    return region or os.environ.get("AWS_REGION") or None


def session(region: str | None = None, profile: str | None = None) -> boto3.Session:
    """A fresh boto3 Session for `region` (None: AWS_REGION, AWS_DEFAULT_REGION, profile).

    Fresh, so credentials and profile are read from the environment now; only the
    (immutable) service models are shared between sessions.
    """
    import boto3
    import botocore.exceptions as bce

    core = _botocore_session()
    loader = _data_loader()
    try:
        made = boto3.Session(
            botocore_session=core, region_name=_default_region(region), profile_name=profile
        )
    except bce.BotoCoreError as e:
        raise translate_error(e) or e from None
    # boto3 appends its own data path to the loader each time; keep the list deduplicated.
    loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))
    return made


def client(
    service: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    max_pool_connections: int = 10,
    boto_session: boto3.Session | None = None,
    **config_overrides: Any,
) -> BaseClient:
    """A boto3 client with llmcloud's Config for `service`.

    Raises AwsUsageError when the region is missing or the endpoint URL is malformed.
    Credentials are resolved lazily by botocore on the first call; wrap calls in
    `aws_errors(...)` to turn a missing/expired credential into a clear message.
    """
    import botocore.exceptions as bce

    _check_endpoint_url(endpoint_url)
    config = botocore_config(max_pool_connections=max_pool_connections, **config_overrides)
    try:
        if boto_session is not None:
            made = boto_session.client(
                service, region_name=region, endpoint_url=endpoint_url, config=config
            )
        else:
            # What boto3.Session(region_name=...).client(...) does, without importing boto3.
            core = _botocore_session()
            made = core.create_client(
                service,
                region_name=_default_region(region),
                endpoint_url=endpoint_url,
                config=config,
            )
    except bce.BotoCoreError as e:
        raise translate_error(e) or e from None
    if made.meta.region_name in (None, "aws-global") and service not in ("iam", "sts"):
        raise AwsUsageError(_NO_REGION)
    return made


_NO_REGION = (
    "no AWS region configured: pass --region (for example --region us-east-1) or set AWS_REGION"
)
_NO_CREDENTIALS = (
    "no AWS credentials found: set AWS_PROFILE (and run `aws sso login` for an SSO profile) "
    "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
)
_EXPIRED = (
    "the AWS credentials have expired: refresh them (`aws sso login` for an SSO profile) "
    "and run the command again"
)
_REJECTED = (
    "AWS rejected the credentials ({code}): check AWS_PROFILE / AWS_ACCESS_KEY_ID, and "
    "--region/--endpoint-url if you use a non-AWS endpoint"
)

# Error codes of ClientError that mean "your credentials", not "this request".
_EXPIRED_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})
_REJECTED_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
        "InvalidToken",
        "AuthFailure",
    }
)
_DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "Forbidden", "403"}
)
# Codes that retries cannot fix but are not the user's fault either: callers treat them as
# failures (exit 1), so they are not translated.
THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequests"}
)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    import botocore.exceptions as bce

    if isinstance(exc, bce.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def translate_error(exc: BaseException, action: str | None = None) -> AwsUsageError | None:
    """The user-facing AwsUsageError for `exc`, or None when it is not a usage problem.

    `action` ("read bucket my-data") is named in access-denied messages so the user knows
    which permission is missing.
    """
    import botocore.exceptions as bce

    doing = f" to {action}" if action else ""
    if isinstance(exc, AwsUsageError):
        return exc
    if isinstance(exc, bce.NoRegionError):
        return AwsUsageError(_NO_REGION)
    if isinstance(exc, bce.ProfileNotFound):
        return AwsUsageError(
            f"AWS profile {exc.kwargs.get('profile')!r} is not in ~/.aws/config: "
            "set AWS_PROFILE to a profile that exists (`aws configure list-profiles`)"
        )
    if isinstance(
        exc, (bce.SSOTokenLoadError, bce.UnauthorizedSSOTokenError, bce.TokenRetrievalError)
    ):
        return AwsUsageError(
            "the AWS SSO session is missing or expired: run `aws sso login` and try again"
        )
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return AwsUsageError(_NO_CREDENTIALS)
    if isinstance(exc, bce.CredentialRetrievalError):
        return AwsUsageError(f"could not load AWS credentials ({exc}): {_NO_CREDENTIALS}")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectTimeoutError)):
        url = exc.kwargs.get("endpoint_url", "the AWS endpoint")
        return AwsUsageError(
            f"cannot connect to {url}: check --endpoint-url/--region and the network"
        )
    if isinstance(exc, bce.ClientError):
        code = error_code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _EXPIRED_CODES:
            return AwsUsageError(_EXPIRED)
        if code in _REJECTED_CODES:
            return AwsUsageError(_REJECTED.format(code=code))
        if code in _DENIED_CODES or (status == 403 and code not in THROTTLING_CODES):
            detail = exc.response.get("Error", {}).get("Message") or code
            return AwsUsageError(
                f"access denied{doing} ({detail}): use credentials whose role allows it"
            )
    return None


@contextlib.contextmanager
def aws_errors(action: str | None = None) -> Iterator[None]:
    """Re-raise credential/region/permission/connection errors as AwsUsageError.

    Errors that are not the user's to fix (a 500, throttling after all retries, a
    NoSuchKey the caller expects) pass through unchanged.
    """
    import botocore.exceptions as bce

    try:
        yield
    except (bce.BotoCoreError, bce.ClientError) as e:
        usage = translate_error(e, action)
        if usage is None:
            raise
        raise usage from None


# Bucket names: 3-63 characters, lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html).
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class S3Url:
    """`s3://bucket/prefix`: prefix has no leading or trailing slash ('' = bucket root)."""

    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        """The object key of `relative` (a POSIX path) under this prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def parse_s3_url(url: str, what: str = "the destination") -> S3Url:
    """Parse `s3://BUCKET[/PREFIX]`, raising AwsUsageError with what is wrong and allowed."""
    if not url.startswith("s3://"):
        raise AwsUsageError(f"{what} {url!r} is not an s3:// URL; use s3://BUCKET/PREFIX")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    if not bucket:
        raise AwsUsageError(f"{what} {url!r} has no bucket name; use s3://BUCKET/PREFIX")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise AwsUsageError(
            f"{what} {url!r}: {bucket!r} is not a valid bucket name (3-63 characters: "
            "lowercase letters, digits, '.', '-', starting and ending with a letter or digit)"
        )
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise AwsUsageError(
            f"{what} {url!r}: the prefix {prefix!r} has an empty, '.' or '..' path segment"
        )
    return S3Url(bucket, prefix)
