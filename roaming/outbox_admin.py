"""Staff view of the durable outbox: per partner what is waiting, refused (with the partner's words) and delivered."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, Min, Q
from django.urls import reverse
from django.utils.html import format_html

from roaming import outbox
from roaming.models import OutboxLane, OutboxMessage


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "partner",
        "module",
        "method",
        "object_id",
        "status",
        "attempts",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "short_error",
    )
    list_filter = ("status", "module", "method", "partner")
    search_fields = ("object_id", "path", "last_error")
    list_select_related = ("partner",)
    show_full_result_count = False  # no COUNT(*) over every message ever sent on each page
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]
    actions = ["resend_messages"]

    @admin.display(description="last error")
    def short_error(self, message: OutboxMessage) -> str:
        return message.last_error[:120]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # kept: what was sent to whom, and what a partner refused

    @admin.action(description="Resend selected refused messages (once the cause is fixed)", permissions=["change"])
    def resend_messages(self, request, queryset):
        selected = list(queryset)
        count = outbox.resend([m for m in selected if m.status == OutboxMessage.Status.FAILED])
        self.message_user(request, f"{count} refused message(s) queued again.", messages.SUCCESS)
        if len(selected) > count:
            # A delivered CDR sent again would be a second CDR; a waiting message goes anyway.
            left = len(selected) - count
            self.message_user(request, f"{left} message(s) not refused were left as they are.", messages.WARNING)


@admin.register(OutboxLane)
class OutboxLaneAdmin(admin.ModelAdmin):
    """One row per partner we push to: its backlog, whether it answers, and links to its messages."""

    list_display = (
        "partner",
        "state",
        "waiting",
        "refused",
        "delivered",
        "oldest_waiting",
        "next_probe_at",
        "last_delivery_at",
        "last_error",
    )
    list_select_related = ("partner",)
    readonly_fields = [f.name for f in OutboxLane._meta.fields]

    def get_queryset(self, request):
        pending, failed, delivered = (OutboxMessage.Status.PENDING, OutboxMessage.Status.FAILED, "delivered")
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_waiting=Count("partner__outbox_messages", filter=Q(partner__outbox_messages__status=pending)),
                n_failed=Count("partner__outbox_messages", filter=Q(partner__outbox_messages__status=failed)),
                n_delivered=Count("partner__outbox_messages", filter=Q(partner__outbox_messages__status=delivered)),
                oldest=Min("partner__outbox_messages__created_at", filter=Q(partner__outbox_messages__status=pending)),
            )
        )

    def _messages_link(self, lane: OutboxLane, status: str, count: int) -> str:
        url = reverse("admin:roaming_outboxmessage_changelist")
        return format_html(
            '<a href="{}?partner__id__exact={}&status__exact={}">{}</a>', url, lane.partner_id, status, count
        )

    @admin.display(description="state")
    def state(self, lane: OutboxLane) -> str:
        return f"down since {lane.down_since:%Y-%m-%d %H:%M:%S}" if lane.down_since else "answering"

    @admin.display(description="waiting", ordering="n_waiting")
    def waiting(self, lane: OutboxLane) -> str:
        return self._messages_link(lane, "pending", lane.n_waiting)

    @admin.display(description="refused", ordering="n_failed")
    def refused(self, lane: OutboxLane) -> str:
        return self._messages_link(lane, "failed", lane.n_failed)

    @admin.display(description="delivered", ordering="n_delivered")
    def delivered(self, lane: OutboxLane) -> str:
        return self._messages_link(lane, "delivered", lane.n_delivered)

    @admin.display(description="oldest waiting", ordering="oldest")
    def oldest_waiting(self, lane: OutboxLane):
        return lane.oldest

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
