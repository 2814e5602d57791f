from django.db import migrations, models
from django.db.models.functions import Now


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="CapturedChange",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("table_name", models.CharField(max_length=255)),
                ("row_pk", models.TextField()),
                ("operation", models.CharField(max_length=1)),
                ("captured_at", models.DateTimeField(db_default=Now())),
            ],
            options={"db_table": "rxdjango_captured_change"},
        ),
    ]
