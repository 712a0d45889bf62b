"""Viewsets whose routes take different bodies."""


class ActionSerializers:
    """``get_serializer_class`` from ``action_serializers`` (action name -> serializer class), falling back to
    ``serializer_class``.

    The action is the one the route runs for the request's method, not ``self.action``: DRF names an
    OPTIONS request's action ``metadata`` and describes a route's POST and PUT by cloning the request with
    that method, so OPTIONS and the browsable API's forms describe the body the route really takes.
    """

    action_serializers: dict = {}

    def get_serializer_class(self):
        request = getattr(self, "request", None)
        action_map = getattr(self, "action_map", None) or {}
        action = action_map.get(request.method.lower(), self.action) if request is not None else self.action
        if action in self.action_serializers:
            return self.action_serializers[action]
        return super().get_serializer_class()
