"""The peer-comparison benchmark (run it with ``bench/peers.py``): predictd against the stacks people use
instead, measured in the same run on the same machine."""
