"""The VPC: public and private subnets in 2–3 zones, NAT, endpoints and flow logs.

Private subnets are large (a /18 each in a /16) because EKS pods take VPC IPs from them; a
p5 node alone can hold hundreds. Public subnets are small and only carry NAT gateways and
internet-facing load balancers; nothing there gets a public IP by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import NetworkConfig
from infra.context import Context, policy_document

# Subnet discovery tags of load balancers: internet-facing ones go to `elb` subnets, internal
# ones to `internal-elb` subnets (AWS Load Balancer Controller, "Subnet auto-discovery":
# https://kubernetes-sigs.github.io/aws-load-balancer-controller/v2.5/deploy/subnet_discovery).
ELB_ROLE_TAGS = {"public": "kubernetes.io/role/elb", "private": "kubernetes.io/role/internal-elb"}
# Interface endpoints that keep node bootstrap and pod identity off the NAT path.
INTERFACE_ENDPOINTS = ("ecr.api", "ecr.dkr", "sts", "ec2", "logs", "eks-auth")


@dataclass(frozen=True)
class NetworkArgs:
    config: NetworkConfig
    cluster_name: str
    flow_logs_key_arn: pulumi.Input[str]


class Network(pulumi.ComponentResource):
    """VPC, subnets, routing, NAT, S3 gateway endpoint, interface endpoints, flow logs."""

    vpc_id: pulumi.Output[str]
    vpc_cidr: str
    zones: list[str]
    private_subnet_ids: list[pulumi.Output[str]]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_by_zone: dict[str, pulumi.Output[str]]

    def __init__(
        self, name: str, args: NetworkArgs, ctx: Context, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("llmcloud:network:Network", name, None, opts)
        cfg = args.config
        child = pulumi.ResourceOptions(parent=self)
        prefix = ctx.prefix
        self.zones = list(cfg.availability_zones)
        self.vpc_cidr = str(cfg.vpc_cidr)

        vpc = aws.ec2.Vpc(
            "vpc",
            cidr_block=self.vpc_cidr,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            tags={"Name": f"{prefix}-vpc"},
            opts=child,
        )
        self.vpc_id = vpc.id
        # The default security group of a VPC allows all traffic between its members; ours
        # has no rules, so nothing can fall back to it (CIS AWS 5.4).
        aws.ec2.DefaultSecurityGroup(
            "default-sg-locked",
            vpc_id=vpc.id,
            ingress=[],
            egress=[],
            tags={"Name": f"{prefix}-default-unused"},
            opts=child,
        )
        igw = aws.ec2.InternetGateway(
            "igw", vpc_id=vpc.id, tags={"Name": f"{prefix}-igw"}, opts=child
        )

        cluster_tag = f"kubernetes.io/cluster/{args.cluster_name}"
        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []

        def subnet(tier: str, zone: str, cidr: object) -> aws.ec2.Subnet:
            return aws.ec2.Subnet(
                f"{tier}-{zone}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=str(cidr),
                map_public_ip_on_launch=False,
                tags={
                    "Name": f"{prefix}-{tier}-{zone}",
                    ELB_ROLE_TAGS[tier]: "1",
                    cluster_tag: "shared",
                    "llmcloud:tier": tier,
                },
                opts=child,
            )

        for zone, public_cidr, private_cidr in zip(
            self.zones, cfg.public_subnets, cfg.private_subnets, strict=True
        ):
            public_subnets.append(subnet("public", zone, public_cidr))
            private_subnets.append(subnet("private", zone, private_cidr))
        self.public_subnet_ids = [s.id for s in public_subnets]
        self.private_subnet_ids = [s.id for s in private_subnets]
        self.private_subnet_by_zone = dict(zip(self.zones, self.private_subnet_ids, strict=True))

        public_rt = aws.ec2.RouteTable(
            "public-rt", vpc_id=vpc.id, tags={"Name": f"{prefix}-public"}, opts=child
        )
        aws.ec2.Route(
            "public-default-route",
            route_table_id=public_rt.id,
            destination_cidr_block="0.0.0.0/0",
            gateway_id=igw.id,
            opts=child,
        )
        for zone, subnet in zip(self.zones, public_subnets, strict=True):
            aws.ec2.RouteTableAssociation(
                f"public-{zone}", subnet_id=subnet.id, route_table_id=public_rt.id, opts=child
            )

        nat_zones = self.zones if cfg.nat_gateways == "per_az" else self.zones[:1]
        nats: dict[str, aws.ec2.NatGateway] = {}
        for zone, subnet in zip(self.zones, public_subnets, strict=True):
            if zone not in nat_zones:
                continue
            eip = aws.ec2.Eip(
                f"nat-{zone}", domain="vpc", tags={"Name": f"{prefix}-nat-{zone}"}, opts=child
            )
            nats[zone] = aws.ec2.NatGateway(
                f"nat-{zone}",
                allocation_id=eip.id,
                subnet_id=subnet.id,
                connectivity_type="public",
                tags={"Name": f"{prefix}-nat-{zone}"},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]),
            )

        private_rts: list[aws.ec2.RouteTable] = []
        for zone, subnet in zip(self.zones, private_subnets, strict=True):
            rt = aws.ec2.RouteTable(
                f"private-rt-{zone}",
                vpc_id=vpc.id,
                tags={"Name": f"{prefix}-private-{zone}"},
                opts=child,
            )
            nat = nats.get(zone) or nats[nat_zones[0]]
            aws.ec2.Route(
                f"private-default-route-{zone}",
                route_table_id=rt.id,
                destination_cidr_block="0.0.0.0/0",
                nat_gateway_id=nat.id,
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"private-{zone}", subnet_id=subnet.id, route_table_id=rt.id, opts=child
            )
            private_rts.append(rt)
        self.private_route_table_ids = [rt.id for rt in private_rts]

        # S3 traffic (datasets, checkpoints, model weights) never crosses a NAT gateway.
        aws.ec2.VpcEndpoint(
            "s3-gateway",
            vpc_id=vpc.id,
            service_name=f"com.amazonaws.{ctx.region}.s3",
            vpc_endpoint_type="Gateway",
            route_table_ids=self.private_route_table_ids,
            tags={"Name": f"{prefix}-s3"},
            opts=child,
        )

        if cfg.interface_endpoints:
            self._interface_endpoints(vpc, ctx, child)

        self._flow_logs(vpc, args, ctx, child)

        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "private_subnet_ids": self.private_subnet_ids,
                "public_subnet_ids": self.public_subnet_ids,
            }
        )

    def _interface_endpoints(
        self, vpc: aws.ec2.Vpc, ctx: Context, child: pulumi.ResourceOptions
    ) -> None:
        sg = aws.ec2.SecurityGroup(
            "endpoints-sg",
            vpc_id=vpc.id,
            description="HTTPS from inside the VPC to AWS interface endpoints",
            tags={"Name": f"{ctx.prefix}-endpoints"},
            opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            "endpoints-https-from-vpc",
            security_group_id=sg.id,
            cidr_ipv4=self.vpc_cidr,
            ip_protocol="tcp",
            from_port=443,
            to_port=443,
            description="HTTPS from the VPC",
            opts=child,
        )
        for service in INTERFACE_ENDPOINTS:
            aws.ec2.VpcEndpoint(
                f"endpoint-{service.replace('.', '-')}",
                vpc_id=vpc.id,
                service_name=f"com.amazonaws.{ctx.region}.{service}",
                vpc_endpoint_type="Interface",
                private_dns_enabled=True,
                subnet_ids=self.private_subnet_ids,
                security_group_ids=[sg.id],
                tags={"Name": f"{ctx.prefix}-{service}"},
                opts=child,
            )

    def _flow_logs(
        self, vpc: aws.ec2.Vpc, args: NetworkArgs, ctx: Context, child: pulumi.ResourceOptions
    ) -> None:
        group = aws.cloudwatch.LogGroup(
            "flow-logs",
            name=f"/llmcloud/{ctx.prefix}/vpc-flow-logs",
            retention_in_days=args.config.flow_logs_retention_days,
            kms_key_id=args.flow_logs_key_arn,
            opts=child,
        )
        role = aws.iam.Role(
            "flow-logs-role",
            description="VPC Flow Logs delivery to CloudWatch Logs",
            assume_role_policy=policy_document(
                [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                        "Condition": {"StringEquals": {"aws:SourceAccount": ctx.account_id}},
                    }
                ]
            ),
            opts=child,
        )
        aws.iam.RolePolicy(
            "flow-logs-delivery",
            role=role.name,
            policy=policy_document(
                [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "logs:CreateLogStream",
                            "logs:PutLogEvents",
                            "logs:DescribeLogStreams",
                        ],
                        "Resource": [group.arn, pulumi.Output.concat(group.arn, ":*")],
                    }
                ]
            ),
            opts=child,
        )
        aws.ec2.FlowLog(
            "vpc-flow-log",
            vpc_id=vpc.id,
            traffic_type="ALL",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            max_aggregation_interval=60,
            tags={"Name": f"{ctx.prefix}-flow-log"},
            opts=child,
        )
