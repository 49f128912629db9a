"""The network: VPC, subnets per zone, NAT, endpoints and flow logs (`vpc`)."""
