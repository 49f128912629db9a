"""Where the Kubernetes layer is deployed from: an AWS CodeBuild-hosted GitHub Actions runner in
the VPC's private subnets, the one place (besides a connected network) that reaches a private
EKS API endpoint ("All traffic to your cluster API server must come from within your cluster's
VPC or a connected network", EKS user guide, cluster endpoint).

CodeBuild runs a job whose `runs-on` is `codebuild-<project>-${{ github.run_id }}-${{
github.run_attempt }}` (AWS CodeBuild user guide, "Self-hosted GitHub Actions runners"): its
webhook takes `WORKFLOW_JOB_QUEUED` events of the repository. The runner's own role can only
run the build (logs, VPC network interfaces, the GitHub connection); the job's AWS identity is
the deploy role it assumes through GitHub OIDC, gated by the GitHub environment (branch
policy, reviewers), which is what holds the cluster-admin access entry. The cluster security
group admits 443 from the runner's security group, and nothing else is opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config.schema import DeployRunnerConfig
from infra.context import Context, policy_document

HTTPS_PORT = 443
# CodeBuild's runner label: the project name, then the run id and attempt (CodeBuild user guide).
RUNS_ON_TEMPLATE = "codebuild-{project}-${{{{ github.run_id }}}}-${{{{ github.run_attempt }}}}"
# Tag keys the deploy-path policy rule reads (policies/rules/deploy_path.py).
DEPLOYS_TAG = "llmcloud:deploys-kubernetes-of"
DEPLOYERS_TAG = "llmcloud:deployers"


def project_name(prefix: str) -> str:
    """The CodeBuild project of a stack: `<prefix>-deploy` (the workflows' runner label)."""
    return f"{prefix}-deploy"


def runs_on(prefix: str) -> str:
    """The `runs-on:` label a workflow job uses to land on the stack's runner."""
    return RUNS_ON_TEMPLATE.format(project=project_name(prefix))


@dataclass(frozen=True)
class DeployRunnerArgs:
    config: DeployRunnerConfig
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_ids: Sequence[pulumi.Input[str]]
    cluster_security_group_id: pulumi.Input[str]
    logs_key_arn: pulumi.Input[str]
    log_retention_days: int
    # who runs `pulumi up` on it (ARNs, Outputs allowed): recorded on the project for the rule
    deployer_arns: Sequence[pulumi.Input[str]]


class DeployRunner(pulumi.ComponentResource):
    """The in-VPC CodeBuild runner project, its webhook, role, security group and log group."""

    project: aws.codebuild.Project
    role: aws.iam.Role
    security_group: aws.ec2.SecurityGroup

    def __init__(
        self,
        name: str,
        args: DeployRunnerArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:cicd:DeployRunner", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cfg = args.config
        project = project_name(ctx.prefix)
        project_arn = ctx.arn("codebuild", f"project/{project}")
        log_group_name = f"/aws/codebuild/{project}"

        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description=f"{project}: CI runner that deploys the Kubernetes layer",
            tags={"Name": f"{project}-runner"},
            opts=child,
        )
        # GitHub, PyPI, Pulumi Cloud and the AWS APIs are all HTTPS; DNS is the VPC resolver.
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-egress-https",
            security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            cidr_ipv4="0.0.0.0/0",
            description="HTTPS to GitHub, package registries, Pulumi Cloud and AWS APIs",
            opts=child,
        )
        self.api_ingress = aws.vpc.SecurityGroupIngressRule(
            f"{name}-to-cluster-api",
            security_group_id=args.cluster_security_group_id,
            referenced_security_group_id=self.security_group.id,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            description=f"Kubernetes API from the {project} runner",
            tags={DEPLOYS_TAG: args.cluster_name},
            opts=child,
        )
        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=log_group_name,
            retention_in_days=args.log_retention_days,
            kms_key_id=args.logs_key_arn,
            opts=child,
        )
        self.role = aws.iam.Role(
            f"{name}-role",
            description=f"{project}: runs the CodeBuild-hosted GitHub Actions runner (no deploy rights)",
            assume_role_policy=policy_document(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "codebuild.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        # confused deputy: only this project of this account
                        "Condition": {
                            "StringEquals": {"aws:SourceAccount": ctx.account_id},
                            "ArnLike": {"aws:SourceArn": project_arn},
                        },
                    }
                ]
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-policy",
            role=self.role.id,
            policy=policy_document(
                runner_statements(
                    ctx,
                    log_group_arn=log_group.arn,
                    subnet_ids=args.subnet_ids,
                    security_group_id=self.security_group.id,
                    connection_arn=cfg.connection_arn,
                )
            ),
            opts=child,
        )
        deployers = pulumi.Output.all(*args.deployer_arns).apply(
            lambda arns: " ".join(sorted(str(a) for a in arns))
        )
        self.project = aws.codebuild.Project(
            f"{name}-project",
            name=project,
            description=f"GitHub Actions runner for {cfg.github_repository} in the VPC of {ctx.prefix}",
            service_role=self.role.arn,
            build_timeout=cfg.timeout_minutes,
            artifacts=aws.codebuild.ProjectArtifactsArgs(type="NO_ARTIFACTS"),
            environment=aws.codebuild.ProjectEnvironmentArgs(
                compute_type=cfg.compute_type,
                image=cfg.image,
                type="LINUX_CONTAINER",
                image_pull_credentials_type="CODEBUILD",
            ),
            source=aws.codebuild.ProjectSourceArgs(
                type="GITHUB",
                location=f"https://github.com/{cfg.github_repository}.git",
                auth=aws.codebuild.ProjectSourceAuthArgs(
                    type="CODECONNECTIONS", resource=cfg.connection_arn
                ),
            ),
            vpc_config=aws.codebuild.ProjectVpcConfigArgs(
                vpc_id=args.vpc_id,
                subnets=list(args.subnet_ids),
                security_group_ids=[self.security_group.id],
            ),
            logs_config=aws.codebuild.ProjectLogsConfigArgs(
                cloudwatch_logs=aws.codebuild.ProjectLogsConfigCloudwatchLogsArgs(
                    group_name=log_group_name, status="ENABLED"
                )
            ),
            tags={DEPLOYS_TAG: args.cluster_name, DEPLOYERS_TAG: deployers},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group]),
        )
        aws.codebuild.Webhook(
            f"{name}-webhook",
            project_name=self.project.name,
            build_type="BUILD",
            filter_groups=[
                aws.codebuild.WebhookFilterGroupArgs(
                    filters=[
                        aws.codebuild.WebhookFilterGroupFilterArgs(
                            type="EVENT", pattern="WORKFLOW_JOB_QUEUED"
                        )
                    ]
                )
            ],
            opts=child,
        )
        self.runs_on = runs_on(ctx.prefix)
        self.register_outputs({"project": self.project.name, "runs_on": self.runs_on})


def runner_statements(
    ctx: Context,
    *,
    log_group_arn: pulumi.Input[str],
    subnet_ids: Sequence[pulumi.Input[str]],
    security_group_id: pulumi.Input[str],
    connection_arn: str,
) -> list[dict]:
    """What a CodeBuild project in a VPC needs (CodeBuild user guide, "Allow CodeBuild access to
    AWS services required to create a VPC network interface"), scoped to its subnets and
    security group where EC2 allows it, plus its logs and its GitHub connection."""
    eni = ctx.arn("ec2", "network-interface/*")
    subnets = [pulumi.Output.concat(ctx.arn("ec2", "subnet/"), s) for s in subnet_ids]
    service = "codeconnections" if ":codeconnections:" in connection_arn else "codestar-connections"
    return [
        {
            "Sid": "BuildLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [log_group_arn, pulumi.Output.concat(log_group_arn, ":log-stream:*")],
        },
        {
            "Sid": "DescribeTheVpc",
            "Effect": "Allow",
            "Action": [
                "ec2:DescribeDhcpOptions",
                "ec2:DescribeNetworkInterfaces",
                "ec2:DescribeSubnets",
                "ec2:DescribeSecurityGroups",
                "ec2:DescribeVpcs",
            ],
            "Resource": "*",  # Describe* has no resource-level permissions
        },
        {
            "Sid": "NetworkInterfacesInItsSubnets",
            "Effect": "Allow",
            "Action": "ec2:CreateNetworkInterface",
            "Resource": [
                eni,
                *subnets,
                pulumi.Output.concat(ctx.arn("ec2", "security-group/"), security_group_id),
            ],
        },
        {
            "Sid": "NetworkInterfacePermissionForCodeBuild",
            "Effect": "Allow",
            "Action": "ec2:CreateNetworkInterfacePermission",
            "Resource": eni,
            "Condition": {
                "StringEquals": {"ec2:AuthorizedService": "codebuild.amazonaws.com"},
                "ArnEquals": {"ec2:Subnet": subnets},
            },
        },
        {
            "Sid": "CleanUpItsNetworkInterfaces",
            "Effect": "Allow",
            "Action": "ec2:DeleteNetworkInterface",
            "Resource": eni,
        },
        {
            "Sid": "GithubConnection",
            "Effect": "Allow",
            "Action": [
                f"{service}:GetConnection",
                f"{service}:GetConnectionToken",
                f"{service}:UseConnection",
            ],
            "Resource": connection_arn,
        },
    ]


def connected_network_ingress(
    name: str,
    *,
    cidrs: Sequence[str],
    cluster_name: pulumi.Input[str],
    cluster_security_group_id: pulumi.Input[str],
    deployer_arns: Sequence[pulumi.Input[str]],
    opts: pulumi.ResourceOptions,
) -> list[aws.vpc.SecurityGroupIngressRule]:
    """`kubernetes_from: connected_network`: the cluster security group admits 443 from the
    connected network's ranges (a VPN or Direct Connect you own), tagged like the runner's
    rule so the deploy-path rule sees the declaration and its deployers."""
    deployers = pulumi.Output.all(*deployer_arns).apply(
        lambda arns: " ".join(sorted(str(a) for a in arns))
    )
    return [
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-{cidr.replace('/', '-').replace('.', '-')}",
            security_group_id=cluster_security_group_id,
            cidr_ipv4=cidr,
            ip_protocol="tcp",
            from_port=HTTPS_PORT,
            to_port=HTTPS_PORT,
            description=f"Kubernetes API from the connected network {cidr}",
            tags={DEPLOYS_TAG: cluster_name, DEPLOYERS_TAG: deployers},
            opts=opts,
        )
        for cidr in cidrs
    ]
