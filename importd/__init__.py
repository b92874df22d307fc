"""importd: reliable CSV to PostgreSQL imports over RabbitMQ."""

__version__ = "0.1.0"
