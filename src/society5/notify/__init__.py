"""``society5.notify``: tell people things by mail, LINE, webhook or MQTT, through the platform's outbox.

A service registers its message templates at import time and tells recipients at run time::

    from society5.notify import MessageTemplate, notifier_of, registry

    registry.register(MessageTemplate("bears.alert", title={"ja": "ヒグマ出没: {{ place }}", ...}, ...))
    notifier_of(platform).tell(["taro"], "bears.alert", {"place": "南区"}, tenant="011002", conn=conn)

See README.md in this package.
"""

from society5.notify.channels.base import Outgoing
from society5.notify.deliveries import Delivery
from society5.notify.notifier import KIND, Notifier
from society5.notify.recipients import QuietHours, Recipient
from society5.notify.startup import notifier_of
from society5.notify.templates import MessageTemplate, Rendered, TemplateError, TemplateRegistry, registry

__all__ = [
    "KIND", "Delivery", "MessageTemplate", "Notifier", "Outgoing", "QuietHours", "Recipient", "Rendered",
    "TemplateError", "TemplateRegistry", "notifier_of", "registry",
]
