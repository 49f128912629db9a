"""Reports for people and machines: SARIF (`sarif`) shared by plan and audit."""
