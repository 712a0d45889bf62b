from django.contrib import admin

from .models import ConflictSettlement, ReviewLease, ReviewSkip, ReviewUndo


@admin.register(ReviewLease)
class ReviewLeaseAdmin(admin.ModelAdmin):
    list_display = ("nucleus", "label_set", "user", "claimed_at", "expires_at", "decided")
    list_filter = ("label_set", "decided")
    raw_id_fields = ("nucleus",)


@admin.register(ReviewSkip)
class ReviewSkipAdmin(admin.ModelAdmin):
    list_display = ("nucleus", "label_set", "user", "skipped_at")
    raw_id_fields = ("nucleus",)


@admin.register(ReviewUndo)
class ReviewUndoAdmin(admin.ModelAdmin):
    list_display = ("label", "restored", "actor", "created_at")
    raw_id_fields = ("label", "restored")


@admin.register(ConflictSettlement)
class ConflictSettlementAdmin(admin.ModelAdmin):
    list_display = ("nucleus", "label_set", "curator", "created_at")
    raw_id_fields = ("label", "nucleus")
