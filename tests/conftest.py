"""Suite-wide setup."""

import signal

# A suite started in the background (`nohup`, `cmd &` in a script) inherits SIGINT ignored, and so
# would every training process the tests start and then interrupt (their Ctrl-C tests would see
# nothing happen). A Python handler here is reset to the default in each child process, whose own
# Python then turns SIGINT into KeyboardInterrupt as a terminal's Ctrl-C would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
