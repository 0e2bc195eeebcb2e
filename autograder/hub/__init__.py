"""The hub: the course served by JupyterHub (``interplab hub``, configured by jupyterhub_config.py).

Its job is to give each person the server and the rights their role allows, and nothing more:

- ``command``: ``interplab hub``: build what is unbuilt, release it to nbgrader's exchange, start
  JupyterHub (with the proxy) and stop it with every server;
- ``login``: the logins (demo on loopback, native, LTI 1.3) and the course groups they fill;
- ``spawners``: where a student's server runs (the local shared-user demo, one Unix user per
  student on one server) and the refusal of unsafe combinations;
- ``exchange``: nbgrader's exchange where students have no Unix users of their own;
- ``profiles``: what a server gets (cores, memory, GPUs), mapped onto each backend;
- ``proxy``: configurable-http-proxy, installed from its lock file.

Data flow: login -> the hub's groups and roles -> the spawner starts the student's server with the
profile's limits -> the server fetches from and submits to the exchange -> the formgrader (an
instructors' service) collects from it.
"""
