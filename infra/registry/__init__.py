"""Container registries the stack owns: the ECR repository the trainer image is pushed to."""
