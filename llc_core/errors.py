"""The one error type that bad input raises."""


class LLCInputError(ValueError):
    """Input the engine cannot use.

    The message always says what is wrong and what to change, in one line, so that the CLI can print
    it as is and the app can show it without a traceback.
    """
