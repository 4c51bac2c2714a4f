"""Where a workshop's machines run: local qemu VMs or OpenStack servers, with the same verbs."""
