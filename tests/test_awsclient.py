"""The shared boto3 plumbing: clients carry our retries and user agent, AWS mistakes become
one sentence that says what to do, s3:// URLs are parsed strictly, flags mean the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import botocore.endpoint
import botocore.exceptions as bce
import pytest
import typer
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from typer.testing import CliRunner

from infra.ops.awsclient import (
    DEFAULT_MAX_ATTEMPTS,
    AwsUsageError,
    EndpointUrlOption,
    RegionOption,
    S3Url,
    aws_errors,
    client,
    parse_s3_url,
    translate_error,
    user_agent,
)


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def _client_error(code: str, status: int = 400, message: str = "") -> bce.ClientError:
    return bce.ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "HeadBucket",
    )


# --- clients -------------------------------------------------------------------------------


def test_client_uses_adaptive_retries_and_llmcloud_user_agent(aws_env: pytest.MonkeyPatch):
    s3 = client("s3", region="eu-west-1", max_pool_connections=40)

    config = s3.meta.config
    assert config.retries == {"mode": "adaptive", "total_max_attempts": DEFAULT_MAX_ATTEMPTS}
    assert config.user_agent_extra == user_agent()
    assert config.max_pool_connections == 40
    assert user_agent().startswith("llmcloud/") and user_agent() != "llmcloud/"
    assert s3.meta.region_name == "eu-west-1"


def test_requests_carry_the_llmcloud_user_agent(aws_env: pytest.MonkeyPatch):
    sent: list[str] = []
    with mock_aws():
        s3 = client("s3", region="us-east-1")
        s3.meta.events.register(
            "before-send.s3.ListBuckets",
            lambda request, **_: sent.append(request.headers["User-Agent"].decode()),
        )
        s3.list_buckets()

    assert len(sent) == 1 and user_agent() in sent[0]


def test_throttling_is_retried_with_backoff(aws_env: pytest.MonkeyPatch):
    slept: list[float] = []
    aws_env.setattr(botocore.endpoint.time, "sleep", slept.append)
    attempts = [0]

    def throttle_twice(request: Any, **_: Any) -> AWSResponse | None:
        attempts[0] += 1
        if attempts[0] > 2:
            return None  # let moto answer
        body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return AWSResponse(request.url, 503, {}, _Raw(body))

    with mock_aws():
        s3 = client("s3", region="us-east-1")
        s3.meta.events.register_first("before-send.s3.ListBuckets", throttle_twice)
        s3.list_buckets()

    assert attempts[0] == 3
    assert len(slept) == 2 and all(delay >= 0 for delay in slept)


class _Raw:
    """The raw body botocore's AWSResponse reads."""

    def __init__(self, body: bytes):
        self._body = body

    def stream(self, **_: Any) -> Any:
        yield self._body


def test_endpoint_url_and_region_reach_the_client(aws_env: pytest.MonkeyPatch):
    kms = client("kms", region="ap-south-1", endpoint_url="http://127.0.0.1:5000")

    assert kms.meta.endpoint_url == "http://127.0.0.1:5000"
    assert kms.meta.region_name == "ap-south-1"


def test_aws_region_env_is_honoured_like_the_aws_cli(aws_env: pytest.MonkeyPatch):
    aws_env.setenv("AWS_REGION", "eu-central-1")
    aws_env.setenv("AWS_DEFAULT_REGION", "us-west-2")

    assert client("kms").meta.region_name == "eu-central-1"


def test_missing_region_is_a_usage_error_that_names_the_flag(aws_env: pytest.MonkeyPatch):
    with pytest.raises(AwsUsageError, match="no AWS region configured: pass --region"):
        client("kms")


@pytest.mark.parametrize("url", ["localhost:5000", "ftp://host", "http://"])
def test_malformed_endpoint_url_is_a_usage_error(aws_env: pytest.MonkeyPatch, url: str):
    with pytest.raises(AwsUsageError, match=f"--endpoint-url '{url}' is not a URL"):
        client("s3", region="us-east-1", endpoint_url=url)


def test_missing_credentials_say_how_to_get_them(aws_env: pytest.MonkeyPatch):
    aws_env.delenv("AWS_ACCESS_KEY_ID")
    aws_env.delenv("AWS_SECRET_ACCESS_KEY")
    s3 = client("s3", region="us-east-1")

    with pytest.raises(AwsUsageError) as caught, aws_errors("list buckets"):
        s3.list_buckets()

    assert "no AWS credentials found: set AWS_PROFILE" in str(caught.value)
    assert "aws sso login" in str(caught.value)


def test_unknown_profile_is_a_usage_error(aws_env: pytest.MonkeyPatch):
    aws_env.setenv("AWS_PROFILE", "nope")

    with pytest.raises(
        AwsUsageError, match=re.escape("AWS profile 'nope' is not in ~/.aws/config")
    ):
        client("s3", region="us-east-1")


# --- error translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (bce.NoCredentialsError(), "no AWS credentials found"),
        (bce.NoRegionError(), "pass --region"),
        (bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "cannot connect to http://127.0.0.1:1"),
        (bce.UnauthorizedSSOTokenError(), "run `aws sso login`"),
        (_client_error("ExpiredToken"), "the AWS credentials have expired"),
        (_client_error("InvalidAccessKeyId", 403), "AWS rejected the credentials (InvalidAccessKeyId)"),
        (_client_error("AccessDenied", 403, "not authorized"), "access denied to read bucket b (not authorized)"),
        (_client_error("403", 403), "access denied to read bucket b"),
    ],
)  # fmt: skip
def test_aws_mistakes_become_one_actionable_sentence(error: Exception, expected: str):
    usage = translate_error(error, "read bucket b")

    assert usage is not None and expected in str(usage)
    assert "\n" not in str(usage)


@pytest.mark.parametrize(
    "error",
    [
        _client_error("NoSuchKey", 404),
        _client_error("InternalError", 500),
        _client_error("SlowDown", 503),
        ValueError("not an AWS error"),
    ],
)
def test_errors_that_are_not_usage_problems_pass_through(error: Exception):
    assert translate_error(error) is None
    with pytest.raises(type(error)), aws_errors("read"):
        raise error


# --- s3:// URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://llm-prod-datasets/tokens/v1", "llm-prod-datasets", "tokens/v1"),
        ("s3://llm-prod-datasets/tokens/v1/", "llm-prod-datasets", "tokens/v1"),
        ("s3://llm-prod-datasets", "llm-prod-datasets", ""),
        ("s3://llm-prod-datasets/", "llm-prod-datasets", ""),
        ("s3://a.b-c/x", "a.b-c", "x"),
    ],
)
def test_s3_urls_parse_into_bucket_and_prefix(url: str, bucket: str, prefix: str):
    parsed = parse_s3_url(url)

    assert parsed == S3Url(bucket, prefix)
    assert parsed.key("shard-0.bin") == (f"{prefix}/shard-0.bin" if prefix else "shard-0.bin")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("llm-prod-datasets/tokens", "is not an s3:// URL; use s3://BUCKET/PREFIX"),
        ("https://llm-prod-datasets.s3.amazonaws.com/x", "is not an s3:// URL"),
        ("s3:///tokens", "has no bucket name"),
        ("s3://Upper_Case/x", "'Upper_Case' is not a valid bucket name"),
        ("s3://ab/x", "'ab' is not a valid bucket name"),
        ("s3://a..b/x", "'a..b' is not a valid bucket name"),
        ("s3://bucket/a//b", "has an empty, '.' or '..' path segment"),
        ("s3://bucket/a/../b", "has an empty, '.' or '..' path segment"),
    ],
)
def test_bad_s3_urls_are_usage_errors_that_say_what_is_allowed(url: str, message: str):
    with pytest.raises(AwsUsageError, match=re.escape(message)):
        parse_s3_url(url)


# --- shared typer options ------------------------------------------------------------------


def test_region_and_endpoint_url_options_parse_the_same_flags_everywhere():
    app = typer.Typer()
    seen: dict[str, str | None] = {}

    @app.command()
    def probe(
        name: Annotated[str, typer.Argument()],
        region: RegionOption = None,
        endpoint_url: EndpointUrlOption = None,
    ) -> None:
        seen.update(name=name, region=region, endpoint_url=endpoint_url)

    result = CliRunner().invoke(
        app, ["x", "--region", "us-west-2", "--endpoint-url", "http://127.0.0.1:5000"]
    )

    assert result.exit_code == 0, result.output
    assert seen == {"name": "x", "region": "us-west-2", "endpoint_url": "http://127.0.0.1:5000"}
    defaults = CliRunner().invoke(app, ["y"])
    assert defaults.exit_code == 0 and seen["region"] is None and seen["endpoint_url"] is None


@pytest.mark.parametrize(
    ("name", "type_name"),
    [
        ("s3", "service-2"),
        ("kms", "service-2"),
        ("s3", "endpoint-rule-set-1"),
        ("sts", "service-2"),
    ],
)
def test_shared_model_loader_reads_the_same_models_as_botocores_own(name: str, type_name: str):
    """Plain dicts instead of OrderedDicts (faster to parse), the same data and search path."""
    import botocore.loaders

    from infra.ops.awsclient import new_data_loader

    theirs, ours = botocore.loaders.create_loader(), new_data_loader()

    assert ours.search_paths == theirs.search_paths
    assert ours.load_service_model(name, type_name) == theirs.load_service_model(name, type_name)
    assert ours.load_data("endpoints") == theirs.load_data("endpoints")


@pytest.mark.parametrize(
    "value",
    [
        "2026-12-01T10:00:00.000Z",  # S3's XML form (ListObjectsV2 LastModified)
        "2026-12-01T10:00:00Z",
        "2026-12-01T23:59:59.123456Z",
        "2026-12-01T10:00:00+02:00",  # not UTC-Z: botocore's own parser
        "Tue, 01 Dec 2026 10:00:00 GMT",  # RFC 822 header form (HeadObject Last-Modified)
        1764583200,  # epoch seconds (JSON protocols)
        "1764583200.5",
    ],
)
def test_timestamps_parse_to_the_instant_botocores_parser_gives(value: Any):
    from botocore.utils import parse_timestamp as botocore_parse_timestamp

    from infra.ops.awsclient import parse_timestamp

    ours, theirs = parse_timestamp(value), botocore_parse_timestamp(value)

    assert ours == theirs and ours.utcoffset() == theirs.utcoffset()


def test_clients_parse_response_timestamps_without_dateutil(
    aws_env: pytest.MonkeyPatch, monkeypatch: pytest.MonkeyPatch
):
    import sys

    import botocore.utils

    handed_on: list[Any] = []  # what our parser passed to botocore's (moto calls it too)
    real = botocore.utils.parse_timestamp

    def recording(value: Any) -> Any:
        if sys._getframe(1).f_code.co_filename.endswith("awsclient.py"):
            handed_on.append(value)
        return real(value)

    monkeypatch.setattr(botocore.utils, "parse_timestamp", recording)
    with mock_aws():
        s3 = client("s3", region="us-east-1")
        s3.create_bucket(Bucket="llm-timestamps")
        s3.put_object(Bucket="llm-timestamps", Key="k", Body=b"x")
        listed = s3.list_objects_v2(Bucket="llm-timestamps")["Contents"][0]["LastModified"]
        head = s3.head_object(Bucket="llm-timestamps", Key="k")["LastModified"]

    assert listed.utcoffset().total_seconds() == 0
    assert abs((listed - head).total_seconds()) < 1
    # only the RFC 822 header went to botocore's parser, not the listing's ISO 8601
    assert len(handed_on) == 1 and handed_on[0].endswith("GMT")
