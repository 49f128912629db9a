"""The plan report for people and pull requests: the Mermaid graph draws the dependencies
between components, the Markdown collapses the cost table and the resource list, tables never
split rule ids, and `--full` shows every resource name."""

from __future__ import annotations

import io
import re

from rich.console import Console
from typer.testing import CliRunner

from infra.cli import app
from infra.plan.report import component_dependencies, mermaid_graph, render_markdown, render_table
from infra.plan.run import run_plan
from infra.reporting.findings import Finding
from infra.reporting.table import findings_table
from tests.conftest import write_project

COMPONENTS = """
import pulumi
import pulumi_aws as aws


class Store(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("demo:storage:Store", name, None, opts)
        self.buckets = [
            aws.s3.Bucket(f"{{name}}-{{i}}", bucket=f"{{name}}-{{i}}", opts=pulumi.ResourceOptions(parent=self))
            for i in range({count})
        ]
        self.register_outputs({{}})


class Reader(pulumi.ComponentResource):
    def __init__(self, name, store, opts=None):
        super().__init__("demo:security:Reader", name, None, opts)
        aws.iam.Policy(f"{{name}}-policy", policy=store.buckets[0].arn.apply(lambda arn: (
            '{{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", '
            '"Action": "s3:GetObject", "Resource": "' + arn + '/*"}}]}}')),
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({{}})


class Gateway(pulumi.ComponentResource):
    def __init__(self, name, opts=None):
        super().__init__("demo:network:Gateway", name, None, opts)
        aws.ec2.NatGateway(f"{{name}}-nat", subnet_id="subnet-0123456789abcdef0",
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({{}})


store = Store("lake")
Reader("trainer", store)
Gateway("egress")
"""


def _report(tmp_path, count: int = 2):
    project = write_project(tmp_path / f"p{count}", COMPONENTS.format(count=count))
    return project, run_plan(project, "dev")


def test_mermaid_graph_draws_dependency_edges_between_components(tmp_path):
    _, report = _report(tmp_path)
    plan = report.plan
    urn = {r.name: r.urn for r in plan.resources if not r.custom}
    assert component_dependencies(plan) == {(urn["lake"], urn["trainer"])}
    graph = mermaid_graph(plan)
    ids = {
        name: re.search(r"(c\d+)\[", next(line for line in graph if f"<br/>{name}<br/>" in line))[1]
        for name in ("lake", "trainer", "egress")
    }
    assert f"  {ids['lake']} -.-> {ids['trainer']}" in graph
    assert not any(ids["egress"] in line and "-.->" in line for line in graph)


def test_markdown_collapses_the_cost_table_and_the_resource_list(tmp_path):
    _, report = _report(tmp_path)
    text = render_markdown(report)
    cost = text[text.index("### Cost estimate") :]
    assert cost.index("<details><summary>") < cost.index("| resource | pricing |")
    assert cost.index("| resource | pricing |") < cost.index("</details>")
    assert "priced resources" in cost.split("\n")[2]
    assert "<details><summary>Resources by type</summary>" in text
    assert "```mermaid" in text and "-.->" in text


def test_tables_never_split_rule_ids_even_at_80_columns():
    findings = [
        Finding(
            "iam-no-write-on-wildcard-resources",
            "mandatory",
            "urn:pulumi:dev::p::aws:iam/policy:Policy::a-policy-with-a-rather-long-name",
            "statement #0 allows s3:PutObject, s3:DeleteObject and kms:Decrypt on every "
            "resource; name the ARNs it writes to",
            "high",
        ),
        Finding("s3-bucket-kms-encryption", "advisory", None, "x " * 60, "high"),
    ]
    out = io.StringIO()
    Console(file=out, width=80, no_color=True).print(findings_table(findings))
    text = out.getvalue()
    for f in findings:
        assert f.policy in text, text


def test_tree_elides_names_unless_full(tmp_path):
    project, report = _report(tmp_path, count=6)

    def buckets_line(text: str) -> str:
        return next(line for line in text.splitlines() if "aws:s3:Bucket ×6" in line)

    def tree(full: bool) -> str:
        out = io.StringIO()
        render_table(report, Console(file=out, width=200, no_color=True), full=full)
        return buckets_line(out.getvalue())

    assert "lake-5" not in tree(False) and "(+2; --full)" in tree(False)
    assert all(f"lake-{i}" in tree(True) for i in range(6))
    result = CliRunner().invoke(app, ["plan", "--project", str(project), "--full"])
    assert "lake-5" in buckets_line(result.stdout), result.output


def test_transitive_dependencies_are_left_out_of_the_graph():
    from infra.plan.report import transitive_reduction

    edges = {("net", "cluster"), ("cluster", "jobs"), ("net", "jobs"), ("keys", "jobs")}
    assert transitive_reduction(edges) == {
        ("net", "cluster"),
        ("cluster", "jobs"),
        ("keys", "jobs"),
    }


def test_prod_graph_connects_network_keys_data_and_cluster(stack_report):
    plan = stack_report("prod").plan
    graph = "\n".join(mermaid_graph(plan))
    ids = {
        name: re.search(rf"(c\d+)\[\"{kind}<br/>", graph)[1]
        for name, kind in (
            ("network", "Network"),
            ("keys", "Keys"),
            ("lake", "DataLake"),
            ("cluster", "Cluster"),
        )
    }
    dotted = re.findall(r"(c\d+) -\.-> (c\d+)", graph)
    touched = {node for edge in dotted for node in edge}
    assert set(ids.values()) <= touched
    assert (ids["network"], ids["cluster"]) in dotted  # the cluster's subnets
