"""`llmcloud plan`: evaluate a Pulumi Python program offline (`engine`, `mocks`), then check it
(`policy_runner`, `scheduling`), price it (`cost`), report it (`report`) and compare two (`diff`)."""
