"""grlab's simulator: the loss zoo and the exact testbeds it is checked on."""
