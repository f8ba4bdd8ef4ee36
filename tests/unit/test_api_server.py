import socket

from api.server import ApiServer
from daq.storage.influxd import free_port


def test_listening_socket_says_tcp_so_asyncio_turns_nagle_off():
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0
    every response written in two parts waited ≈40 ms for the client's delayed ACK."""
    server = ApiServer(None, "127.0.0.1", free_port())
    server.bind()
    try:
        assert server.sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(("127.0.0.1", server.port))
        conn, _ = server.sock.accept()
        assert conn.proto == socket.IPPROTO_TCP  # what asyncio's _set_nodelay checks
        conn.close()
        client.close()
    finally:
        server.sock.close()
