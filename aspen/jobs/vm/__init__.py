"""The guest side of ``vm`` jobs: image, disks, QEMU command line, image cache."""
