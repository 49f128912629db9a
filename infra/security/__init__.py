"""Security: KMS keys per purpose (`keys`), IAM roles and pod roles (`roles`), the IAM statement
builders and the read-only classifier (`statements`), people's access entries and namespaces
(`access`), the CloudTrail audit trail (`audit_trail`) and the CI identity (`github_oidc`)."""
