"""What a cluster of real VMs needs: the cluster file, SSH bootstrap, agent readiness, the code
bundle, S3 credentials. Below the runtime; the local emulation harness is :mod:`sonic.emulation`."""
