"""The boto3 tools run against a live account: `stage` (dataset uploads), `preflight` (capacity
before deploy), `audit` (drift against the policy rules), `smoke` (a deployed endpoint), and
the shared client plumbing (`awsclient`)."""
