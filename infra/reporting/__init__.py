"""Reports for people and machines, shared by plan, audit and diff: the one `Finding` type and
severity -> SARIF level map (`findings`), and one renderer per format: `table` (rich),
`markdown` (pull requests), `sarif` (GitHub code scanning); JSON is each report's `to_json`."""
