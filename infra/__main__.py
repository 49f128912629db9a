"""`python -m infra` runs the llmcloud CLI."""

from infra.cli import main

main()
