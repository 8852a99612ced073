"""The ``remoterun`` Django app: a streaming view and the ``runremote`` management command."""
