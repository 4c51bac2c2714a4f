"""What runs on the VM: stages, context, files, user-data, image record, console, validators."""
