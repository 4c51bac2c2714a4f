"""The OpenStack provider: servers, security groups, floating IPs (`bakery launch`)."""
