"""Transports, frame and register decoding, and simulated equipment.

Drivers never open connections from configuration themselves: they are handed a
transport, so tests can give them a socket, a pty or a recorded transcript.
"""
