from rest_framework import serializers

from .models import Item, Order


class ItemSerializer(serializers.ModelSerializer):
    class Meta:
        model = Item
        fields = ["id", "name", "price"]


class OrderSerializer(serializers.ModelSerializer):
    total_price = serializers.DecimalField(max_digits=10, decimal_places=2, read_only=True)
    lines = ItemSerializer(many=True, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "name", "total_price", "lines"]
