"""The cluster: the EKS control plane (`eks`), its node groups (`nodegroups`) and the add-ons
installed on it (`addons`)."""
