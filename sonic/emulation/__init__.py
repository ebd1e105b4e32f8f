"""The local emulation harness: a whole cluster on this machine (loopback, ssh or netns mode).

Emulated VMs (processes, network namespaces with shaped links, per-VM cgroups), a throwaway
sshd, and the embedded S3-compatible server. Nothing here runs on a real VM: what does
(cluster file, SSH bootstrap, agent readiness, S3 credentials) is :mod:`sonic.cluster`,
which this package uses, as it uses the runtime's real agent program.
"""
