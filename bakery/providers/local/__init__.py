"""The local provider: qemu VMs on this machine (`bakery try`)."""
