"""The output budget: every byte a grading kernel sends counts, and the kernel is stopped at a cap.

A kernel can make the grader hold, store and render whatever it prints. Two mechanisms bound that:

- each message is at most :func:`max_message_bytes` (``zmq.MAXMSGSIZE`` on the grader's sockets,
  set by :class:`GradingKernelClient`): a larger one is refused by zmq before it is allocated, the
  connection drops, and :meth:`GradingKernelClient.dropped` reports it;
- :class:`OutputBudget` is charged by the notebook client for every message of a cell as it
  arrives (``process_message``, before nbclient stores anything): stream text, display data,
  execute results, display updates, errors, comm messages, any MIME type, binary buffers. A cell
  may send ``max_cell_output`` bytes, the notebook ``max_notebook_output``; check bundles
  (``application/vnd.interplab.check+json``) are accepted from test cells only, against their own
  ``max_check_output`` per notebook, and dropped elsewhere (a bundle in a student's cell counts
  as ordinary output).

The first message over a cap makes :meth:`OutputBudget.charge` return the reason; the caller
(``GradingExecute``) then kills the kernel, the cell gets an ``OutputLimit`` error saying why and
the cells after it are not run. So the executed notebook, the autograded notebook and the
feedback stay within the caps, and so does the grader's memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import zmq
from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.connect import channel_socket_types
from traitlets import Integer

from interplab.checking import BUNDLE_MIME

from .policy import MiB, SandboxPolicy, format_size

CHARGED = {"stream", "display_data", "execute_result", "update_display_data", "error", "comm_open", "comm_msg",
           "comm_close"}
SLACK = 1 * MiB  # headers, signatures and JSON quoting around the largest payload we accept


class OutputCapExceeded(Exception):
    """A kernel sent more output than its policy allows (the message says which cap)."""


def max_message_bytes(policy: SandboxPolicy) -> int:
    """The largest single message the grader accepts from a kernel."""
    return max(policy.max_cell_output, policy.max_check_output) + SLACK


def message_size(msg: dict[str, Any]) -> int:
    """Bytes a message carries: its content as JSON plus its binary buffers."""
    size = len(json.dumps(msg.get("content", {}), default=str))
    return size + sum(len(buffer) for buffer in msg.get("buffers") or [])


@dataclass
class OutputBudget:
    """What one notebook's kernel has sent so far, per cell and in all."""

    policy: SandboxPolicy
    cells: dict[int, int] = field(default_factory=dict)
    total: int = 0
    checks: int = 0
    exceeded: str | None = None      # why the kernel was stopped
    exceeded_cell: int | None = None

    def charge(self, msg: dict[str, Any], cell_index: int, test_cell: bool) -> str:
        """``"keep"`` (store the message), ``"drop"`` (a bundle outside a test cell, or anything
        after a cap was hit) or ``"stop"`` (this message broke a cap: stop the kernel)."""
        if self.exceeded is not None:
            return "drop"
        kind = msg.get("msg_type") or msg.get("header", {}).get("msg_type", "")
        if kind not in CHARGED:
            return "keep"
        size = message_size(msg)
        data = msg.get("content", {}).get("data") or {}
        if BUNDLE_MIME in data and test_cell:
            self.checks += size
            if self.checks > self.policy.max_check_output:
                return self._stop(cell_index, f"the check results of this notebook exceeded "
                                              f"{format_size(self.policy.max_check_output)} (max_check_output)")
            return "keep"
        self.cells[cell_index] = self.cells.get(cell_index, 0) + size
        self.total += size
        if self.cells[cell_index] > self.policy.max_cell_output:
            return self._stop(cell_index, f"this cell's output exceeded {format_size(self.policy.max_cell_output)} "
                                          "(max_cell_output)")
        if self.total > self.policy.max_notebook_output:
            return self._stop(cell_index, f"the notebook's output exceeded "
                                          f"{format_size(self.policy.max_notebook_output)} (max_notebook_output)")
        return "drop" if BUNDLE_MIME in data else "keep"

    def message_too_large(self, cell_index: int) -> str:
        """Record that zmq refused a message larger than any cap allows."""
        return self._stop(cell_index, f"the kernel sent one output larger than "
                                      f"{format_size(max_message_bytes(self.policy))}")

    def _stop(self, cell_index: int, why: str) -> str:
        self.exceeded, self.exceeded_cell = f"output limit: {why}; the kernel was stopped", cell_index
        return "stop"


class GradingKernelClient(AsyncKernelClient):
    """The grader's side of a grading kernel's channels, refusing messages over ``max_message``
    bytes (zmq drops the connection instead of allocating them)."""

    max_message = Integer(0, help="largest message accepted on any channel (0: no limit)").tag(config=True)
    _monitor: Any = None
    _dropped = False

    def _create_connected_socket(self, channel: str, identity: bytes | None = None) -> zmq.Socket:
        """jupyter_client's, with MAXMSGSIZE set before connecting (it applies to later connections
        only) and, on iopub, a monitor of disconnections. No CURVE keys: our kernels use ipc."""
        sock = self.context.socket(channel_socket_types[channel])
        sock.linger = 1000
        if identity:
            sock.identity = identity
        if self.max_message:
            sock.setsockopt(zmq.MAXMSGSIZE, int(self.max_message))
            if channel == "iopub":
                self._monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self._make_url(channel))
        return sock

    def dropped(self) -> bool:
        """Whether the iopub connection was dropped (zmq refused a message over ``max_message``);
        once it was, always."""
        if self._monitor is None or self._dropped:
            return self._dropped
        monitor = zmq.Socket.shadow(self._monitor.underlying)  # a synchronous view of the same socket
        while monitor.poll(0):
            monitor.recv_multipart()
            self._dropped = True
        return self._dropped

    def stop_channels(self) -> None:
        super().stop_channels()
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
