"""The agent's RPyC service: the node's `Agent` (nodeagent/agent.py), its methods exposed and nothing else.

Every exposed method takes and returns bytes, str or numbers, so no list or
dict ever crosses as a netref (no classic mode, no public attributes).
"""

import nodeagent.rpyc_without_ssl  # noqa: F401  (before rpyc, see there)
import rpyc

from nodeagent.agent import Agent

__all__ = ["AgentService"]


class AgentService(Agent, rpyc.Service):
    """What the console may call on an agent process."""

    exposed_hello = Agent.hello
    exposed_start_job = Agent.start_job
    exposed_end_job = Agent.end_job
    exposed_add_files = Agent.add_files
    exposed_missing_wheels = Agent.missing_wheels
    exposed_put_wheel = Agent.put_wheel
    exposed_exchange = Agent.exchange
    exposed_metrics = Agent.metrics
    exposed_cancel = Agent.cancel
    exposed_report_state = Agent.report_state

    def on_disconnect(self, conn: object) -> None:
        self.close()
