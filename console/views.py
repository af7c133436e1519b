"""The console's few views outside the admin's model pages: the login landing and the staff member's zone."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.views import LoginView
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from console.models import StaffPreference, time_zone_choices


class LandingLoginView(LoginView):
    """The site's login: staff land on the staff overview, drivers on the map (an explicit `next` wins)."""

    def get_default_redirect_url(self) -> str:
        if self.request.user.is_staff:
            return reverse("admin:index")
        return super().get_default_redirect_url()


class TimeZoneForm(forms.Form):
    time_zone = forms.ChoiceField(choices=time_zone_choices, label="Show times in")


@require_POST
def staff_time_zone(request: HttpRequest) -> HttpResponse:
    """Save the zone this staff member reads times in (admin_view-wrapped: staff only)."""
    form = TimeZoneForm(request.POST)
    if form.is_valid():
        zone = form.cleaned_data["time_zone"]
        StaffPreference.objects.update_or_create(user=request.user, defaults={"time_zone": zone})
        messages.success(request, f"Times are now shown in {form.cleaned_data['time_zone']}.")
    else:
        messages.error(request, "Unknown time zone.")
    return HttpResponseRedirect(reverse("admin:index"))
