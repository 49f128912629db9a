"""The stack's ECR repository for the trainer image (workloads/training/Dockerfile).

Encrypted with the stack's data key (the image carries the trainer code that reads the data),
scanned on push, tags immutable (a tag names one image forever, so `:sha-<commit>` is as good
as a digest), and a lifecycle policy that keeps the images a rollback may need and drops the
rest. Nodes pull it with their role's AmazonEC2ContainerRegistryReadOnly; ECR decrypts the
layers with the grant it creates on the key, so pullers need no KMS permission.
`.github/workflows/trainer-image.yml` builds and pushes to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.context import Context

# Images kept: the newest of the `sha-` tags the workflow pushes; untagged layers (a rebuilt
# manifest list's leftovers) go after a week.
KEEP_TAGGED_IMAGES = 30
UNTAGGED_EXPIRY_DAYS = 7
TAG_PREFIX = "sha-"


def repository_name(prefix: str) -> str:
    """`<prefix>-trainer`: what the workflow and the stack files name."""
    return f"{prefix}-trainer"


def lifecycle_policy() -> str:
    """ECR lifecycle rules (ECR user guide, "Lifecycle policy parameters")."""
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": f"untagged images go after {UNTAGGED_EXPIRY_DAYS} days",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": UNTAGGED_EXPIRY_DAYS,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"keep the newest {KEEP_TAGGED_IMAGES} {TAG_PREFIX}* images",
                    "selection": {
                        "tagStatus": "tagged",
                        "tagPrefixList": [TAG_PREFIX],
                        "countType": "imageCountMoreThan",
                        "countNumber": KEEP_TAGGED_IMAGES,
                    },
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class TrainerRepositoryArgs:
    kms_key_arn: pulumi.Input[str]


class TrainerRepository(pulumi.ComponentResource):
    """The trainer image's ECR repository and its lifecycle policy."""

    repository: aws.ecr.Repository
    repository_url: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: TrainerRepositoryArgs,
        ctx: Context,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__("llmcloud:registry:TrainerRepository", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.repository = aws.ecr.Repository(
            f"{name}-repository",
            name=repository_name(ctx.prefix),
            image_tag_mutability="IMMUTABLE",
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(
                scan_on_push=True
            ),
            encryption_configurations=[
                aws.ecr.RepositoryEncryptionConfigurationArgs(
                    encryption_type="KMS", kms_key=args.kms_key_arn
                )
            ],
            force_delete=False,
            opts=child,
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=self.repository.name,
            policy=lifecycle_policy(),
            opts=child,
        )
        self.repository_url = self.repository.repository_url
        self.register_outputs({"repository_url": self.repository_url})
