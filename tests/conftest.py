import pytest
import torch
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import app_test

# Two cores, several test processes: keep torch from oversubscribing them.
torch.set_num_threads(1)


@pytest.fixture
def navigation_mode(monkeypatch):
    """Run every AppTest script run under app.py's st.navigation, as a real server does once any page
    has loaded: AppTest re-detects the pages/ folder on every run and would otherwise start each run
    in Streamlit's legacy pages/ mode (test_app_home.py checks that the pages cope with that too)."""
    class NavigationOnly(PagesManager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            PagesManager.uses_pages_directory = False

    monkeypatch.setattr(app_test, "PagesManager", NavigationOnly)
