from django.contrib import admin

from .models import Board, Card, Column, Comment, Note

admin.site.register([Board, Column, Card, Comment, Note])
