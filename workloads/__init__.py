"""What runs on the cluster: the packaged trainer and its `TrainingJob` (`training`), vLLM
endpoints (`serving`), the model gateway (`gateway`), and what they share (`pods`, `facts`)."""
