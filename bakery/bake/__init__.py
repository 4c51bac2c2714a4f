"""Golden images: the builders (Packer, chroot, openstacksdk) behind one call, and upload."""
