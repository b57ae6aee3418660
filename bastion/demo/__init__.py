"""Local stand-ins for first runs and tests: a loopback OpenSSH sshd as a demo target."""
