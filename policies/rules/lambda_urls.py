"""Lambda function URL rule: a function URL authenticates its callers (IAM), unless a
waiver says the function is meant to be public.

Function URL auth types per the Lambda API: `AWS_IAM` (SigV4-signed requests by principals
the resource policy allows) or `NONE` (anyone with the URL; the resource-based policy must
then allow `lambda:InvokeFunctionUrl` for `*`).
"""

from __future__ import annotations

from typing import Any

from policies.rules.base import PolicySettings, Reporter, RuleInfo, RuleResourcePolicy, fsbp

FUNCTION_URL = "aws:lambda/functionUrl:FunctionUrl"

URL_AUTH = RuleInfo(
    id="lambda-url-auth",
    title="Lambda function URLs authenticate callers",
    description="Every Lambda function URL uses authorization_type AWS_IAM; a URL open to "
    "anyone (NONE) needs a waiver saying why.",
    severity="high",
    remediation="Set authorization_type='AWS_IAM' and grant lambda:InvokeFunctionUrl to the "
    "callers' roles; put a public API behind API Gateway or CloudFront with auth instead.",
    controls=(fsbp("Lambda.1"),),
)


def check_url_auth(args: Any, props: dict[str, Any], report: Reporter, s: PolicySettings) -> None:
    auth = props.get("authorizationType")
    if isinstance(auth, str) and auth.upper() == "NONE":
        report(
            f"function URL {args.name!r} has authorization_type NONE: anyone with the URL "
            f"invokes {props.get('functionName')!r}"
        )


def policies(settings: PolicySettings) -> list[Any]:
    return [RuleResourcePolicy(URL_AUTH, settings, check_url_auth, [FUNCTION_URL])]
