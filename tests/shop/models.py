"""Models of the compatibility app, declared the way the original RxDjango documents."""

from decimal import Decimal

from django.conf import settings
from django.db import models

from rxdjango.decorators import related_property


class Order(models.Model):
    name = models.CharField(max_length=100)
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)

    @related_property("items", "order")
    def total_price(self) -> Decimal:
        """A plain value computed from the items: it changes when they do."""
        return sum((item.price for item in self.items.all()), Decimal("0.00"))

    @related_property("items")
    def lines(self):
        """A computed relation; the reverse path ('order') is worked out from 'items'."""
        return self.items.all()

    @property
    def siblings(self):
        """A plain property: a nested serializer may not follow it (UnknownProperty)."""
        return Order.objects.filter(customer=self.customer).exclude(pk=self.pk)


class Item(models.Model):
    order = models.ForeignKey(Order, related_name="items", on_delete=models.CASCADE)
    name = models.CharField(max_length=100)
    price = models.DecimalField(max_digits=8, decimal_places=2)

    class Meta:
        ordering = ["id"]  # lists of items in a stable order, here and in REST output
