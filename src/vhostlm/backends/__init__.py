"""vhost-user backends behind the guest's NIC: the interface and one module per program."""
