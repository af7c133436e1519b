"""The driver's own cards page."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from cards import selectors, services
from cards.models import Card


@login_required
def my_cards(request: HttpRequest) -> HttpResponse:
    return render(request, "cards/my_cards.html", {"cards": selectors.cards_of_driver(request.user)})


@login_required
@require_POST
def block_my_card(request: HttpRequest, pk: int) -> HttpResponse:
    # Another driver's card is a 404: we do not even confirm it exists.
    card = get_object_or_404(Card, pk=pk, driver__user=request.user)
    reason = (request.POST.get("reason") or "").strip() or "Blocked by the driver"
    try:
        services.block_card(card, by=request.user, reason=reason[:255])
    except services.CardError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Card {card.visual_number or card.contract_id} is blocked everywhere.")
    return redirect("cards:my-cards")
